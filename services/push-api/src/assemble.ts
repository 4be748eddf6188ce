import { hostname } from 'node:os';
import { topicNames, type PushApiConfig } from '@pushline/config';
import {
  CoalescingDeliveryTransport,
  DeviceLocator,
  HttpDeliveryTransport,
  MessageRouter,
  type DeviceLocatorOptions,
} from '@pushline/delivery';
import { BufferedPublisher, serviceKafkaClient, type KafkaClient } from '@pushline/kafka';
import { RedisOfflineStore } from '@pushline/offline-store';
import { closeRedis, RedisDeviceRegistry, serviceRedis } from '@pushline/registry';
import { assemblyLifecycle, type AssemblyOptions, type Component } from '@pushline/runtime';
import { createMetricsRegistry, trace, type Registry } from '@pushline/telemetry';
import type { Redis } from 'ioredis';
import { createPushApi, type PushApi } from './server.ts';

/** The id this instance goes by in traces, logs and metrics. */
export function pushApiInstanceId(config: PushApiConfig): string {
  return `${hostname()}-${config.PUSHLINE_API_PORT}-${process.pid}`;
}

export interface AssemblePushApiOptions extends AssemblyOptions {
  /** The caller's (connected), and left open by `close()`. Default: a client on PUSHLINE_REDIS_URL, owned. */
  readonly redis?: Redis;
  /** Default: a client on PUSHLINE_KAFKA_BROKERS. */
  readonly kafka?: KafkaClient;
  /** The direct-push device cache. Default: DeviceLocator's defaults. */
  readonly locator?: Pick<DeviceLocatorOptions, 'maxEntries' | 'ttlMs' | 'negativeTtlMs'>;
}

/** A push-api with everything it runs on, wired the way the deployed process runs. */
export interface AssembledPushApi extends Component {
  readonly api: PushApi;
  /** Base URL (after start). */
  readonly url: string;
  readonly router: MessageRouter;
  readonly registry: RedisDeviceRegistry;
  readonly redis: Redis;
  readonly kafka: KafkaClient;
  readonly metrics: Registry;
}

/** The composition root of the push-api, used by main.ts and by tests alike. */
export function assemblePushApi(config: PushApiConfig, options: AssemblePushApiOptions): AssembledPushApi {
  const { logger } = options;
  const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
  const { redis, owned: ownedRedis } = serviceRedis(options.redis, config, logger);
  const kafka = options.kafka ?? serviceKafkaClient(config, 'push-api', logger);
  const metrics =
    options.metrics ?? createMetricsRegistry({ service: 'push-api', instance: pushApiInstanceId(config) });
  const tracer = options.tracer ?? trace.getTracer('pushline-push-api');
  const registry = new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX });
  // Concurrent pushes to the same connection server share one internal exchange per event-loop
  // turn; each request still gets its own device's outcome as soon as that device has acked.
  const transport = new CoalescingDeliveryTransport({
    transport: new HttpDeliveryTransport({
      internalToken: config.PUSHLINE_INTERNAL_TOKEN,
      logger,
      metrics,
    }),
  });
  const locator = new DeviceLocator({ ...options.locator, registry, metrics, tracer });
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
    publishOutcome: (ev) => outcomes.publish({ key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) }),
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

  return {
    api,
    get url() {
      return api.url;
    },
    router,
    registry,
    redis,
    kafka,
    metrics,
    ...assemblyLifecycle({
      logger,
      tracing: options.tracing,
      async start() {
        await ownedRedis?.connect();
        await outcomesProducer.start();
        await api.start();
      },
      // Reverse order of construction: the API drains first, then what it used.
      steps: [
        // Bounded by its own steps, each of which is bounded.
        { name: 'push-api', run: () => api.close(), timeoutMs: Infinity },
        { name: 'delivery outcomes', run: () => outcomes.close() },
        { name: 'outcomes producer', run: () => outcomesProducer.close() },
        { name: 'delivery transport', run: () => transport.close() },
        { name: 'redis', run: () => closeRedis(ownedRedis) },
      ],
    }),
  };
}
