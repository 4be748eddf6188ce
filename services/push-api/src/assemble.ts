import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { topicNames, type PushApiConfig } from '@pushline/config';
import {
  ChannelDeliveryTransport,
  DeviceLocator,
  MessageRouter,
  type DeviceLocatorOptions,
} from '@pushline/delivery';
import { ensurePlatformTopics, serviceKafkaClient, type KafkaClient } from '@pushline/kafka';
import { OutboxRelay, RedisOfflineStore } from '@pushline/offline-store';
import {
  closeRedis,
  RedisDeviceRegistry,
  RegistryWatch,
  serviceRedis,
  type RedisClient,
} from '@pushline/registry';
import { assemblyLifecycle, type AssemblyOptions, type Component } from '@pushline/runtime';
import { createMetricsRegistry, trace, type Registry } from '@pushline/telemetry';
import { createPushApi, type PushApi } from './server.ts';

/** The id this instance goes by in traces, logs and metrics. */
export function pushApiInstanceId(config: PushApiConfig): string {
  return `${hostname()}-${config.PUSHLINE_API_PORT}-${process.pid}`;
}

export interface AssemblePushApiOptions extends AssemblyOptions {
  /** The caller's (connected), and left open by `close()`. Default: a client on PUSHLINE_REDIS_URL, owned. */
  readonly redis?: RedisClient;
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
  /** Base URL of the ops port: /healthz, /readyz, /metrics (after start). */
  readonly opsUrl: string;
  readonly router: MessageRouter;
  /** Whether Redis holds every connected device; a push to a device not found waits on it. */
  readonly registryWatch: RegistryWatch;
  readonly registry: RedisDeviceRegistry;
  readonly redis: RedisClient;
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
    options.metrics ?? createMetricsRegistry({ service: 'push-api', instance_id: pushApiInstanceId(config) });
  const tracer = options.tracer ?? trace.getTracer('pushline-push-api');
  const registry = new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX });
  // Concurrent pushes to the same connection server share one frame per event-loop turn on its
  // channel; each request still gets its own device's outcome as soon as that device has acked.
  const transport = new ChannelDeliveryTransport({
    internalToken: config.PUSHLINE_INTERNAL_TOKEN,
    tlsCa:
      config.PUSHLINE_INTERNAL_TLS_CA === undefined
        ? undefined
        : readFileSync(config.PUSHLINE_INTERNAL_TLS_CA),
    logger,
    metrics,
  });
  const locator = new DeviceLocator({ ...options.locator, registry, metrics, tracer });
  // While Redis's lost entries are written back, a push to a device not found is a 503, not a 404.
  const registryWatch = new RegistryWatch({
    registry,
    redis,
    watcherId: `push-api:${pushApiInstanceId(config)}`,
    logger,
    metrics,
  });
  const router = new MessageRouter({
    locator,
    registry,
    transport,
    tracer,
    logger,
    metrics,
    completeness: registryWatch,
  });
  // Every service that writes to the offline store relays its outbox (terminal outcomes written
  // in the same Redis step as the change), so outcomes flow while any of them runs.
  const outcomesProducer = kafka.producer();
  const relay = new OutboxRelay({
    redis,
    partitions: config.PUSHLINE_REDIS_OFFLINE_PARTITIONS,
    keyPrefix: config.PUSHLINE_KEY_PREFIX,
    consumer: pushApiInstanceId(config),
    publish: (events) =>
      outcomesProducer.send(
        topics.deliveryEvents,
        events.map((ev) => ({ key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) })),
      ),
    logger,
    metrics,
  });
  const offlineStore = new RedisOfflineStore({
    redis,
    partitions: config.PUSHLINE_REDIS_OFFLINE_PARTITIONS,
    keyPrefix: config.PUSHLINE_KEY_PREFIX,
    maxPerDevice: config.PUSHLINE_OFFLINE_MAX_PER_DEVICE,
    quota: {
      maxMessages: config.PUSHLINE_OFFLINE_QUOTA_MESSAGES,
      maxBytes: config.PUSHLINE_OFFLINE_QUOTA_BYTES,
    },
    onOutbox: () => relay.kick(),
    logger,
    metrics,
  });
  const api = createPushApi({
    config,
    redis,
    registry,
    completeness: registryWatch,
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
    get opsUrl() {
      return api.opsUrl;
    },
    router,
    registryWatch,
    registry,
    redis,
    kafka,
    metrics,
    ...assemblyLifecycle({
      logger,
      tracing: options.tracing,
      async start() {
        await ownedRedis?.connect();
        await ensurePlatformTopics(kafka, topics, config.PUSHLINE_KAFKA_PARTITIONS);
        await outcomesProducer.start();
        await relay.start();
        await registryWatch.start();
        await api.start();
      },
      // Reverse order of construction: the API drains first, then what it used.
      steps: [
        // Bounded by its own steps, each of which is bounded.
        { name: 'push-api', run: () => api.close(), timeoutMs: Infinity },
        { name: 'registry watch', run: () => registryWatch.close() },
        { name: 'outbox relay', run: () => relay.close() },
        { name: 'outcomes producer', run: () => outcomesProducer.close() },
        { name: 'delivery transport', run: () => transport.close() },
        { name: 'redis', run: () => closeRedis(ownedRedis) },
      ],
    }),
  };
}
