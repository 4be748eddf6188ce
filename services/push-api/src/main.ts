import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import { parseEnv, pushApiEnv, topicNames } from '@pushline/config';
import { DeviceLocator, HttpDeliveryTransport, MessageRouter } from '@pushline/delivery';
import { BufferedPublisher, createKafkaClient } from '@pushline/kafka';
import { RedisOfflineStore } from '@pushline/offline-store';
import { RedisDeviceRegistry } from '@pushline/registry';
import { closeOnce, runCleanup, runMain } from '@pushline/runtime';
import { createLogger, createMetricsRegistry, startTracing, trace } from '@pushline/telemetry';
import { createPushApi } from './server.ts';

const config = parseEnv(pushApiEnv, process.env);
const instanceId = `${hostname()}-${config.PUSHLINE_API_PORT}-${process.pid}`;
const tracing = startTracing({ serviceName: 'pushline-push-api', instanceId });
const logger = createLogger({ service: 'push-api', level: config.PUSHLINE_LOG_LEVEL, base: { instanceId } });

runMain({
  name: 'push-api',
  logger,
  boot: async () => {
    const metrics = createMetricsRegistry({ service: 'push-api', instance: instanceId });
    const tracer = trace.getTracer('pushline-push-api');
    const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
    const redis = new Redis(config.PUSHLINE_REDIS_URL, { lazyConnect: true });
    const kafka = createKafkaClient({
      brokers: config.PUSHLINE_KAFKA_BROKERS,
      clientId: `${config.PUSHLINE_KAFKA_CLIENT_ID}-push-api`,
      logger,
    });
    const registry = new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX });
    const transport = new HttpDeliveryTransport({
      internalToken: config.PUSHLINE_INTERNAL_TOKEN,
      logger,
      metrics,
    });
    const locator = new DeviceLocator({ registry, metrics, tracer });
    const router = new MessageRouter({ locator, registry, transport, tracer, logger, metrics });
    // Terminal outcomes of stored messages evicted by a store from this API (the rest are recorded by
    // the connection servers and the processor's sweeper).
    const outcomesProducer = kafka.producer();
    const outcomes = new BufferedPublisher({
      producer: outcomesProducer,
      topic: topics.deliveryEvents,
      logger,
    });
    const offlineStore = new RedisOfflineStore({
      redis,
      keyPrefix: config.PUSHLINE_KEY_PREFIX,
      maxPerDevice: config.PUSHLINE_OFFLINE_MAX_PER_DEVICE,
      publishOutcome: (ev) =>
        outcomes.publish({ key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) }),
      logger,
      metrics,
    });
    const api = createPushApi({
      config,
      redis,
      registry,
      router,
      kafka,
      offlineStore,
      logger,
      metrics,
      tracer,
    });

    // Reverse order of construction: the API drains first, then what it used.
    const close = closeOnce(() =>
      runCleanup([
        { name: 'push-api', run: () => api.close() },
        { name: 'delivery outcomes', run: () => outcomes.close() },
        { name: 'outcomes producer', run: () => outcomesProducer.close() },
        { name: 'delivery transport', run: () => transport.close() },
        { name: 'redis', run: () => redis.quit().then(() => undefined) },
        { name: 'tracing', run: () => tracing.close() },
      ]),
    );
    try {
      await redis.connect();
      await outcomesProducer.start();
      await api.start();
    } catch (err) {
      await close().catch((closeErr: unknown) =>
        logger.warn({ err: closeErr }, 'cleanup after a failed boot failed'),
      );
      throw err;
    }
    return { close };
  },
});
