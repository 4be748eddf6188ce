import { hostname } from 'node:os';
import { connectionServerEnv, parseEnv, topicNames } from '@pushline/config';
import { createKafkaClient, platformTopics } from '@pushline/kafka';
import { RedisDeviceRegistry } from '@pushline/registry';
import { runCleanup, runMain } from '@pushline/runtime';
import { createLogger, createMetricsRegistry, startTracing, trace } from '@pushline/telemetry';
import { Redis } from 'ioredis';
import { createConnectionServer } from './index.ts';

const config = parseEnv(connectionServerEnv, process.env);
const serverId = config.PUSHLINE_SERVER_ID ?? `${hostname()}-${config.PUSHLINE_PORT}`;
const logger = createLogger({
  service: 'connection-server',
  level: config.PUSHLINE_LOG_LEVEL,
  base: { serverId },
});

runMain({
  name: 'connection-server',
  logger,
  boot: async () => {
    const tracing = startTracing({ serviceName: 'pushline-connection-server', instanceId: serverId });
    const redis = new Redis(config.PUSHLINE_REDIS_URL, { lazyConnect: false });
    redis.on('error', (err: Error) => logger.warn({ err }, 'redis error'));
    const kafka = createKafkaClient({
      brokers: config.PUSHLINE_KAFKA_BROKERS,
      clientId: `${config.PUSHLINE_KAFKA_CLIENT_ID}-connection-server`,
      logger,
    });
    const admin = kafka.admin();
    const server = createConnectionServer({
      config: { ...config, PUSHLINE_SERVER_ID: serverId },
      redis,
      registry: new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX }),
      kafka,
      logger,
      metrics: createMetricsRegistry({ service: 'connection-server', instance: serverId }),
      tracer: trace.getTracer('pushline-connection-server'),
    });
    const close = () =>
      runCleanup([
        { name: 'connection server', run: () => server.close() },
        { name: 'kafka admin', run: () => admin.close() },
        { name: 'redis', run: () => redis.quit().then(() => undefined) },
        { name: 'tracing', run: () => tracing.close() },
      ]);
    try {
      await admin.ensureTopics(
        platformTopics(topicNames(config.PUSHLINE_TOPIC_PREFIX), config.PUSHLINE_KAFKA_PARTITIONS),
      );
      await server.start();
    } catch (err) {
      await close().catch((closeErr: unknown) =>
        logger.error({ err: closeErr }, 'cleanup after failed start'),
      );
      throw err;
    }
    return { close };
  },
});
