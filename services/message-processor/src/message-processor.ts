import { readFileSync } from 'node:fs';
import { topicNames, type MessageProcessorConfig } from '@pushline/config';
import {
  ChannelDeliveryTransport,
  DeviceLocator,
  MessageRouter,
  type DeliveryTransport,
} from '@pushline/delivery';
import type { Admin, KafkaClient, Producer } from '@pushline/kafka';
import { OutboxRelay, RedisOfflineStore } from '@pushline/offline-store';
import {
  RedisDeviceRegistry,
  RegistryWatch,
  type DeviceRegistry,
  type RedisClient,
} from '@pushline/registry';
import { OpsServer, closeOnce, runCleanup } from '@pushline/runtime';
import { Gauge, type Logger, type Registry, type Tracer } from '@pushline/telemetry';
import pLimit from 'p-limit';
import { CacheInvalidator } from './cache-invalidation.ts';
import { DeadLetterQueue } from './dead-letter.ts';
import { DependencyGate } from './dependency-gate.ts';
import { createProcessorMetrics } from './metrics.ts';
import { OutcomeCommitter } from './outcome-committer.ts';
import { PublishedOutcomes } from './published-outcomes.ts';
import { OutcomeRecorder } from './outcomes.ts';
import { PushRequestConsumer } from './push-request-consumer.ts';
import { PushRequestHandler } from './request-handler.ts';
import { RequestLedger } from './request-ledger.ts';
import { Sweeper } from './sweeper.ts';
import { TargetResolver } from './target-resolver.ts';

export interface MessageProcessorDeps {
  /** Parsed with `messageProcessorEnv` (tests: `parseEnv(messageProcessorEnv, {...})`). */
  readonly config: MessageProcessorConfig;
  /** The id this instance goes by in traces, logs, metrics and request claims (`processorInstanceId(config)`). */
  readonly instanceId: string;
  /** ioredis client owned by the caller (registry, offline store, request ledger). */
  readonly redis: RedisClient;
  readonly kafka: KafkaClient;
  readonly logger: Logger;
  readonly metrics: Registry;
  readonly tracer: Tracer;
  /** Default: a `RedisDeviceRegistry` on `redis` with the configured key prefix. */
  readonly registry?: DeviceRegistry;
  /** Default: a `ChannelDeliveryTransport` owned (and closed) by the processor. */
  readonly transport?: DeliveryTransport;
}

export interface MessageProcessor {
  /** Starts the ops port, joins the group and starts the sweeper (the composition root creates the topics first). */
  start(): Promise<void>;
  /** Stops taking records, finishes the ones in hand and commits them, then closes everything it owns. */
  close(): Promise<void>;
  readonly instanceId: string;
  /** Base URL of the ops port (/healthz, /readyz, /metrics). */
  readonly opsUrl: string;
  /** The offline store, shared with the connection servers through Redis. */
  readonly store: RedisOfflineStore;
  readonly locator: DeviceLocator;
  /** Whether Redis holds every connected device; records that would answer from its silence wait on it. */
  readonly registryWatch: RegistryWatch;
  /** Partitions of the push-requests topic this member holds now. */
  readonly assignedPartitions: readonly number[];
}

/** Builds a message processor from its dependencies; `assemble.ts` wires it to the environment. */
export function createMessageProcessor(deps: MessageProcessorDeps): MessageProcessor {
  const { config, instanceId, redis, kafka, metrics, tracer } = deps;
  const logger = deps.logger.child({ instanceId });
  const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
  const keyPrefix = config.PUSHLINE_KEY_PREFIX;

  const inFlightLimit = pLimit(config.PUSHLINE_PROCESSOR_MAX_IN_FLIGHT);
  const lagByPartition = new Map<number, number>();
  let assigned: number[] = [];
  // Filled in below; the gauges only read them when scraped.
  const parts: { gate?: DependencyGate; consumer?: PushRequestConsumer } = {};
  const m = createProcessorMetrics(metrics, {
    inFlight: () => inFlightLimit.activeCount,
    lag: () => [...lagByPartition.values()].reduce((a, b) => a + b, 0),
    dependencies: () => ({
      redis: parts.gate?.isUp('redis') ?? true,
      kafka: parts.gate?.isUp('kafka') ?? true,
      registry: parts.gate?.isUp('registry') ?? true,
    }),
    partitions: () => {
      const now = Date.now();
      return (parts.consumer?.progress() ?? []).map((p) => ({
        partition: p.partition,
        unfinished: p.unfinished,
        oldestUnfinishedAgeS:
          p.oldestUnfinishedSince === undefined ? 0 : (now - p.oldestUnfinishedSince) / 1000,
        stalledS: p.stalledSince === undefined ? 0 : (now - p.stalledSince) / 1000,
      }));
    },
  });

  const redisRegistry = new RedisDeviceRegistry({ redis, keyPrefix });
  const registry = deps.registry ?? redisRegistry;
  const ownTransport = deps.transport
    ? undefined
    : new ChannelDeliveryTransport({
        internalToken: config.PUSHLINE_INTERNAL_TOKEN,
        tlsCa:
          config.PUSHLINE_INTERNAL_TLS_CA === undefined
            ? undefined
            : readFileSync(config.PUSHLINE_INTERNAL_TLS_CA),
        logger,
        metrics,
      });
  // Deliveries started in the same tick (many keys of many batches) go to each server as one
  // frame on its channel.
  const transport: DeliveryTransport = deps.transport ?? (ownTransport as ChannelDeliveryTransport);
  const locator = new DeviceLocator({
    registry,
    maxEntries: config.PUSHLINE_LOCATOR_CACHE_MAX,
    ttlMs: config.PUSHLINE_LOCATOR_CACHE_TTL_MS,
    // A cached "not registered" can predate the device's connect event by the connection
    // servers' event batching; here it would turn a message into a final not_connected (or a
    // stored one) for a connected device, so the processor always reads the registry instead.
    negativeTtlMs: 0,
    metrics,
    tracer,
  });
  new Gauge({
    name: 'pushline_processor_locator_hit_ratio',
    help: 'Share of device lookups answered by the in-process cache since start (hits incl. cached "not registered").',
    registers: [metrics],
    collect() {
      const s = locator.stats;
      const hits = s.hits + s.negativeHits;
      this.set(hits + s.misses === 0 ? 0 : hits / (hits + s.misses));
    },
  });
  const registryWatch = new RegistryWatch({
    registry: redisRegistry,
    redis,
    watcherId: `processor:${instanceId}`,
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

  const producer: Producer = kafka.producer();
  // Only while Kafka is thought down: one metadata request per probe.
  let probeAdmin: Admin | undefined;
  const dependencyGate = new DependencyGate({
    probes: {
      redis: () => redis.ping(),
      kafka: () => (probeAdmin ??= kafka.admin()).listTopics(),
      // Whole now is enough to reopen: each record reads the registry again when it runs.
      registry: async () => {
        await registryWatch.check();
        if (!registryWatch.complete) throw new Error('the registry is still being restored');
      },
    },
    logger,
    onProbeFailure: (dependency) => m.loopFailures.inc({ loop: `probe_${dependency}` }),
  });
  parts.gate = dependencyGate;
  // A closed connection is noticed at once, before any command fails on it.
  const onRedisClose = () => dependencyGate.down('redis', new Error('connection to Redis closed'));
  redis.on('close', onRedisClose);
  const outcomes = new OutcomeRecorder({ producer, topic: topics.deliveryEvents, metrics: m, tracer });
  // Terminal outcomes of stored messages go through the store's outbox, relayed by every service
  // that writes to the store.
  const relay = new OutboxRelay({
    redis,
    partitions: config.PUSHLINE_REDIS_OFFLINE_PARTITIONS,
    keyPrefix,
    consumer: instanceId,
    publish: (events) =>
      producer.send(
        topics.deliveryEvents,
        events.map((ev) => ({ key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) })),
      ),
    logger,
    metrics,
  });
  const store = new RedisOfflineStore({
    redis,
    partitions: config.PUSHLINE_REDIS_OFFLINE_PARTITIONS,
    keyPrefix,
    maxPerDevice: config.PUSHLINE_OFFLINE_MAX_PER_DEVICE,
    leaseMs: config.PUSHLINE_OFFLINE_LEASE_MS,
    quota: {
      maxMessages: config.PUSHLINE_OFFLINE_QUOTA_MESSAGES,
      maxBytes: config.PUSHLINE_OFFLINE_QUOTA_BYTES,
    },
    onOutbox: () => relay.kick(),
    logger,
    metrics,
  });
  const ledger = new RequestLedger({
    redis,
    keyPrefix,
    instanceId,
    claimTtlMs: config.PUSHLINE_PROCESSOR_CLAIM_TTL_MS ?? config.PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS,
    windowSeconds: config.PUSHLINE_PROCESSOR_DEDUPE_WINDOW_S,
    logger,
    onWait: () => m.claimWaits.inc(),
    onLost: () => m.claimsLost.inc(),
    onRenewFailure: () => m.loopFailures.inc({ loop: 'claim_renewal' }),
  });
  // Only when a request's earlier holder died between recording its outcome and marking it done.
  let scanAdmin: Admin | undefined;
  const published = new PublishedOutcomes({
    admin: {
      recordsSince: (...args) => (scanAdmin ??= kafka.admin()).recordsSince(...args),
    },
    topic: topics.deliveryEvents,
    logger,
  });
  const handler = new PushRequestHandler({
    resolver: new TargetResolver({ router, logger }),
    router,
    locator,
    store,
    deliveryTimeoutMs: config.PUSHLINE_DELIVERY_TIMEOUT_MS,
  });
  const pushRequests = new PushRequestConsumer({
    kafka,
    topic: topics.pushRequests,
    groupId: config.PUSHLINE_PROCESSOR_GROUP_ID,
    partitionsConcurrency: config.PUSHLINE_PROCESSOR_PARTITIONS_CONCURRENCY,
    maxUnfinishedPerPartition: config.PUSHLINE_PROCESSOR_MAX_UNFINISHED_PER_PARTITION,
    sessionTimeoutMs: config.PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS,
    decodeLimits: {
      maxPayloadBytes: config.PUSHLINE_MAX_PAYLOAD_BYTES,
      maxDepth: config.PUSHLINE_MAX_JSON_DEPTH,
      maxRecordBytes: config.PUSHLINE_PROCESSOR_MAX_RECORD_BYTES,
    },
    maxAttempts: config.PUSHLINE_PROCESSOR_MAX_ATTEMPTS,
    inFlightLimit,
    dlq: new DeadLetterQueue({ producer, topic: topics.pushRequestsDlq }),
    ledger,
    handler,
    store,
    committer: new OutcomeCommitter({
      outcomes,
      ledger,
      gate: dependencyGate,
      logger,
      onRetry: (dependency) => m.retries.inc({ cause: dependency }),
    }),
    published,
    gate: dependencyGate,
    metrics: m,
    tracer,
    logger,
    onLag: (partition, lag) => lagByPartition.set(partition, lag),
    onAssignment: (assignment) => {
      assigned = [...(assignment[topics.pushRequests] ?? [])].sort((a, b) => a - b);
      const mine = new Set(assigned);
      for (const partition of lagByPartition.keys())
        if (!mine.has(partition)) lagByPartition.delete(partition);
    },
  });
  parts.consumer = pushRequests;
  const invalidator = new CacheInvalidator({
    kafka,
    topic: topics.connectionEvents,
    groupId: `${config.PUSHLINE_PROCESSOR_GROUP_ID}.cache.${instanceId}`,
    locator,
    metrics: m,
    logger,
  });
  const sweeper = new Sweeper({
    store,
    intervalMs: config.PUSHLINE_OFFLINE_SWEEP_MS,
    batch: config.PUSHLINE_OFFLINE_SWEEP_BATCH,
    metrics: m,
    logger,
  });
  const ops = new OpsServer({
    host: config.PUSHLINE_PROCESSOR_HOST,
    port: config.PUSHLINE_PROCESSOR_PORT,
    metrics,
    // From state the processor keeps anyway: a readiness probe never waits on Redis or Kafka.
    ready: () => {
      const now = Date.now();
      const stalled = pushRequests
        .progress()
        .filter(
          (p) =>
            p.stalledSince !== undefined && now - p.stalledSince >= config.PUSHLINE_PROCESSOR_STALL_AFTER_MS,
        )
        .map((p) => ({
          partition: p.partition,
          stalledForMs: now - (p.stalledSince ?? now),
          unfinished: p.unfinished,
          oldestUnfinishedOffset: p.oldestUnfinishedOffset,
        }));
      const redisUp = dependencyGate.isUp('redis');
      const kafkaUp = dependencyGate.isUp('kafka');
      const registryComplete = dependencyGate.isUp('registry');
      const ok =
        pushRequests.joined &&
        invalidator.joined &&
        redisUp &&
        kafkaUp &&
        registryComplete &&
        stalled.length === 0;
      return Promise.resolve({
        ok,
        detail: {
          consumer: pushRequests.joined,
          cacheInvalidation: invalidator.joined,
          redis: redisUp,
          kafka: kafkaUp,
          registryComplete,
          pausedFor: Object.keys(dependencyGate.downSince()),
          stalledPartitions: stalled,
        },
      });
    },
  });

  let started = false;
  const close = closeOnce(async () => {
    logger.info('message processor closing');
    assigned = [];
    await runCleanup([
      // Stop taking records first; the records in hand finish (or give up waiting) and are committed.
      { name: 'push-request consumer', run: () => pushRequests.close() },
      { name: 'request claims', run: () => ledger.close() },
      {
        name: 'published-outcome checks',
        run: async () => {
          await published.close();
          await scanAdmin?.close();
        },
      },
      {
        name: 'dependency gate',
        run: async () => {
          dependencyGate.close();
          redis.off('close', onRedisClose);
          await probeAdmin?.close();
        },
      },
      { name: 'registry watch', run: () => registryWatch.close() },
      { name: 'sweeper', run: () => sweeper.close() },
      { name: 'outbox relay', run: () => relay.close() },
      { name: 'cache invalidation', run: () => invalidator.close() },
      { name: 'producer', run: () => producer.close() },
      { name: 'transport', run: () => ownTransport?.close() },
      { name: 'ops server', run: () => ops.close() },
    ]);
    logger.info('message processor closed');
  });

  return {
    instanceId,
    store,
    locator,
    registryWatch,
    get assignedPartitions() {
      return assigned;
    },
    get opsUrl() {
      return ops.url;
    },
    async start() {
      if (started) throw new Error('message processor already started');
      started = true;
      await ops.start();
      await producer.start();
      dependencyGate.start();
      await registryWatch.start();
      ledger.start();
      await relay.start();
      await Promise.all([pushRequests.start(), invalidator.start()]);
      await sweeper.start();
      logger.info(
        { opsUrl: ops.url, groupId: config.PUSHLINE_PROCESSOR_GROUP_ID },
        'message processor started',
      );
    },
    close,
  };
}
