import { hostname } from 'node:os';
import { connectionServerEnv, parseEnv, topicNames } from '@pushline/config';
import { createKafkaClient, platformTopics } from '@pushline/kafka';
import { RedisOfflineStore } from '@pushline/offline-store';
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
    const metrics = createMetricsRegistry({ service: 'connection-server', instance: serverId });
    const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
    // Terminal outcomes of stored messages this server drains to reconnecting devices.
    const outcomes = kafka.producer();
    const inbox = new RedisOfflineStore({
      redis,
      keyPrefix: config.PUSHLINE_KEY_PREFIX,
      // This server only drains; the storing side (processor, push-api) enforces the bound.
      maxPerDevice: Number.MAX_SAFE_INTEGER,
      publishOutcome: (ev) =>
        outcomes.send(topics.deliveryEvents, [
          { key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) },
        ]),
      logger,
      metrics,
    });
    const server = createConnectionServer({
      config: { ...config, PUSHLINE_SERVER_ID: serverId },
      redis,
      registry: new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX }),
      kafka,
      logger,
      metrics,
      tracer: trace.getTracer('pushline-connection-server'),
      inbox,
    });
    const close = () =>
      runCleanup([
        { name: 'connection server', run: () => server.close() },
        { name: 'outcomes producer', run: () => outcomes.close() },
        { name: 'kafka admin', run: () => admin.close() },
        { name: 'redis', run: () => redis.quit().then(() => undefined) },
        { name: 'tracing', run: () => tracing.close() },
      ]);
    try {
      await admin.ensureTopics(platformTopics(topics, config.PUSHLINE_KAFKA_PARTITIONS));
      await outcomes.start();
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
