import { Redis } from 'ioredis';
import { messageProcessorEnv, parseEnv } from '@pushline/config';
import { createKafkaClient } from '@pushline/kafka';
import { runCleanup, runMain } from '@pushline/runtime';
import { createLogger, createMetricsRegistry, startTracing, trace } from '@pushline/telemetry';
import { createMessageProcessor } from './service.ts';

const config = parseEnv(messageProcessorEnv, process.env);
const logger = createLogger({ service: 'message-processor', level: config.PUSHLINE_LOG_LEVEL });

runMain({
  name: 'message-processor',
  logger,
  boot: async () => {
    const tracing = startTracing({
      serviceName: 'pushline-message-processor',
      instanceId: config.PUSHLINE_PROCESSOR_INSTANCE_ID ?? `${process.pid}`,
    });
    const redis = new Redis(config.PUSHLINE_REDIS_URL, { lazyConnect: true });
    await redis.connect();
    const processor = createMessageProcessor({
      config,
      redis,
      kafka: createKafkaClient({
        brokers: config.PUSHLINE_KAFKA_BROKERS,
        clientId: `${config.PUSHLINE_KAFKA_CLIENT_ID}-message-processor`,
        logger,
      }),
      logger,
      metrics: createMetricsRegistry({ service: 'message-processor' }),
      tracer: trace.getTracer('pushline-message-processor'),
    });
    try {
      await processor.start();
    } catch (err) {
      await runCleanup([
        { name: 'processor', run: () => processor.close() },
        { name: 'redis', run: async () => void (await redis.quit()) },
        { name: 'tracing', run: () => tracing.close() },
      ]).catch(() => {});
      throw err;
    }
    return {
      close: () =>
        runCleanup([
          { name: 'processor', run: () => processor.close() },
          { name: 'redis', run: async () => void (await redis.quit()) },
          { name: 'tracing', run: () => tracing.close() },
        ]),
    };
  },
});
