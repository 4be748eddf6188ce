import { hostname } from 'node:os';
import { topicNames, type ConnectionServerConfig } from '@pushline/config';
import { serviceKafkaClient, ensurePlatformTopics, type KafkaClient } from '@pushline/kafka';
import { OutboxRelay, RedisOfflineStore, type OfflineInbox } from '@pushline/offline-store';
import { closeRedis, RedisDeviceRegistry, serviceRedis, type RedisClient } from '@pushline/registry';
import { assemblyLifecycle, type AssemblyOptions, type Component } from '@pushline/runtime';
import { createMetricsRegistry, trace, type Registry } from '@pushline/telemetry';
import { LoadAgent } from './load-agent.ts';
import { createConnectionServer, type ConnectionServer } from './server.ts';
import { DEFAULT_MAX_PENDING_HANDSHAKES } from './socket-server.ts';

/** The id this server goes by in the registry, logs, traces and metrics. */
export function connectionServerId(config: ConnectionServerConfig): string {
  return config.PUSHLINE_SERVER_ID ?? `${hostname()}-${config.PUSHLINE_PORT}`;
}

export interface AssembleConnectionServerOptions extends AssemblyOptions {
  /**
   * The caller's, and left open by `close()`. Default: a client on PUSHLINE_REDIS_URL with
   * auto-pipelining, owned.
   */
  readonly redis?: RedisClient;
  /** Default: a client on PUSHLINE_KAFKA_BROKERS. */
  readonly kafka?: KafkaClient;
  /** Default: the Redis offline store, whose terminal outcomes go to the delivery-events topic. */
  readonly inbox?: OfflineInbox;
}

/** A connection server with everything it runs on, wired the way the deployed process runs. */
export interface AssembledConnectionServer extends Component {
  readonly server: ConnectionServer;
  readonly serverId: string;
  readonly redis: RedisClient;
  readonly kafka: KafkaClient;
  readonly registry: RedisDeviceRegistry;
  readonly metrics: Registry;
  /** Answers the load balancer's agent checks and exports the capacity signal. */
  readonly agent: LoadAgent;
}

/** The composition root of the connection server, used by main.ts and by tests alike. */
export function assembleConnectionServer(
  config: ConnectionServerConfig,
  options: AssembleConnectionServerOptions,
): AssembledConnectionServer {
  const { logger } = options;
  const serverId = connectionServerId(config);
  const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
  // Every connect writes its registration and checks its offline inbox: auto-pipelining sends the
  // commands of one event-loop turn (and those issued while a batch is in flight) as one write,
  // so a burst of connects costs a few round trips instead of two each.
  const { redis, owned: ownedRedis } = serviceRedis(options.redis, config, logger, {
    enableAutoPipelining: true,
  });
  const kafka = options.kafka ?? serviceKafkaClient(config, 'connection-server', logger);
  const metrics =
    options.metrics ?? createMetricsRegistry({ service: 'connection-server', instance_id: serverId });
  const registry = new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX });
  // Terminal outcomes of stored messages this server drains to reconnecting devices: written to
  // the store's outbox with the drain's own step, published by this server's relay.
  const outcomes = kafka.producer();
  const relay = new OutboxRelay({
    redis,
    partitions: config.PUSHLINE_REDIS_OFFLINE_PARTITIONS,
    keyPrefix: config.PUSHLINE_KEY_PREFIX,
    consumer: serverId,
    publish: (events) =>
      outcomes.send(
        topics.deliveryEvents,
        events.map((ev) => ({ key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) })),
      ),
    logger,
    metrics,
  });
  const inbox =
    options.inbox ??
    new RedisOfflineStore({
      redis,
      partitions: config.PUSHLINE_REDIS_OFFLINE_PARTITIONS,
      keyPrefix: config.PUSHLINE_KEY_PREFIX,
      // This server only drains; the storing side (processor, push-api) enforces the bound.
      maxPerDevice: Number.MAX_SAFE_INTEGER,
      onOutbox: () => relay.kick(),
      logger,
      metrics,
    });
  const server = createConnectionServer({
    config,
    serverId,
    redis,
    registry,
    kafka,
    logger,
    metrics,
    tracer: options.tracer ?? trace.getTracer('pushline-connection-server'),
    inbox,
  });
  const agent = new LoadAgent({
    host: config.PUSHLINE_INTERNAL_HOST,
    port: config.PUSHLINE_AGENT_PORT,
    load: () => ({
      connections: server.connectionCount,
      pendingHandshakes: server.pendingHandshakes,
      ready: server.ready,
    }),
    probeRegistry: () => redis.ping(),
    limits: {
      maxConnections: config.PUSHLINE_MAX_CONNECTIONS,
      maxPendingHandshakes: DEFAULT_MAX_PENDING_HANDSHAKES,
      maxEventLoopLagMs: config.PUSHLINE_MAX_EVENT_LOOP_LAG_MS,
    },
    metrics,
    logger: logger.child({ component: 'load-agent', serverId }),
  });

  return {
    server,
    serverId,
    redis,
    kafka,
    registry,
    metrics,
    agent,
    ...assemblyLifecycle({
      logger,
      tracing: options.tracing,
      async start() {
        // First, so a balancer that already lists this server reads `down #starting` until it is ready.
        await agent.start();
        await ownedRedis?.connect();
        await ensurePlatformTopics(kafka, topics, config.PUSHLINE_KAFKA_PARTITIONS);
        await outcomes.start();
        await relay.start();
        await server.start();
      },
      steps: [
        // Balancers stop sending devices here before the first reconnect hint, so the devices
        // told to leave land on the other servers instead of coming back.
        { name: 'load balancer drain', run: () => agent.drain() },
        // Bounded by its own steps, each of which is bounded.
        { name: 'connection server', run: () => server.close(), timeoutMs: Infinity },
        { name: 'load agent', run: () => agent.close() },
        { name: 'outbox relay', run: () => relay.close() },
        { name: 'outcomes producer', run: () => outcomes.close() },
        { name: 'redis', run: () => closeRedis(ownedRedis) },
      ],
    }),
  };
}
