import { Cluster, Redis, type ClusterOptions, type Command, type RedisOptions } from 'ioredis';
import type { Logger } from '@pushline/telemetry';

/**
 * A client of the platform's Redis: one server (`Redis`) or a Redis Cluster (`Cluster`). Both
 * speak the same commands; what differs is batching (a pipeline must stay on one node, so code
 * that batches goes through `sendAll`) and that every script or MULTI must touch one slot, which
 * the key layouts guarantee with hash tags (docs/decisions/0022-redis-cluster.md).
 */
export type RedisClient = Redis | Cluster;

/** The Redis variables of every service's config (`commonEnv` in @pushline/config). */
export interface RedisClientConfig {
  readonly PUSHLINE_REDIS_URL: string;
  /** Startup nodes (host:port) of a Redis Cluster; unset for one Redis. */
  readonly PUSHLINE_REDIS_CLUSTER_NODES?: readonly string[] | undefined;
  readonly PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: number;
  readonly PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: number;
  readonly PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: number;
}

/** Longest wait between reconnect attempts: a restarted Redis is found again within it. */
const MAX_RECONNECT_DELAY_MS = 1_000;
/**
 * TCP keepalive probes start after this much silence, so a peer that vanished (host gone, no RST)
 * is noticed on an idle connection too, such as a subscriber waiting for messages.
 */
const KEEPALIVE_MS = 10_000;

const reconnectDelay = (attempt: number) => Math.min(attempt * 50, MAX_RECONNECT_DELAY_MS);

/** Whether the client talks to a Redis Cluster. */
export function isCluster(client: RedisClient): client is Cluster {
  return (client as { isCluster?: boolean }).isCluster === true;
}

/**
 * Options of a client that sends commands and waits for their replies. Every wait is bounded:
 * - a command fails with "Command timed out" after PUSHLINE_REDIS_COMMAND_TIMEOUT_MS, whether it
 *   was written to a Redis that stopped answering or is queued while disconnected;
 * - a connection attempt gives up after PUSHLINE_REDIS_CONNECT_TIMEOUT_MS;
 * - the offline queue (commands issued while disconnected) is failed as a whole after every
 *   PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST + 1 failed reconnect attempts, so it cannot grow for the
 *   length of an outage;
 * - a connection that got no byte back for a command timeout after writing is torn down and
 *   reconnected: a Redis host that vanished without a reset is left behind in seconds, not in the
 *   kernel's retransmission timeout (minutes).
 * A command that timed out may still run on Redis later (it was sent, or it is resent after a
 * reconnect): its outcome is unknown, like any timeout.
 */
export function redisCommandOptions(config: RedisClientConfig): RedisOptions {
  return {
    commandTimeout: config.PUSHLINE_REDIS_COMMAND_TIMEOUT_MS,
    socketTimeout: config.PUSHLINE_REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: config.PUSHLINE_REDIS_CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: config.PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST,
    retryStrategy: reconnectDelay,
    keepAlive: KEEPALIVE_MS,
  };
}

/**
 * Options of a pub/sub subscriber (the socket.io adapter's). It has no command timeout, no read
 * timeout and an offline queue that is never failed: a subscriber is idle by design between
 * messages, and the adapter fires its (S)SUBSCRIBE commands without awaiting them, so a timeout or
 * a flushed queue would reject a promise nobody handles (and Node ends the process on that). Its
 * subscriptions are bounded differently: nothing waits on them, and ioredis re-subscribes every
 * channel after a reconnect. Connecting and dead peers are bounded as for command clients.
 */
export function redisSubscriberOptions(config: RedisClientConfig): RedisOptions {
  return {
    commandTimeout: undefined,
    socketTimeout: undefined,
    connectTimeout: config.PUSHLINE_REDIS_CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: null,
    retryStrategy: reconnectDelay,
    keepAlive: KEEPALIVE_MS,
    autoResubscribe: true,
  };
}

/**
 * Options of a Redis Cluster client. Node connections get the bounds of `redisCommandOptions`
 * (or the subscriber's), plus the URL's credentials and TLS; a node that goes away is dropped and
 * found again through the slot map (ioredis refreshes it on MOVED, on a lost connection, and every
 * 5 s), so a replica promoted by a failover is used within a refresh. Commands are auto-pipelined:
 * the ones issued in one event-loop turn go to each node as one write, which is how batches reach
 * several nodes at once (`sendAll`). `shardedSubscribers` gives a subscriber one connection per
 * master, so SSUBSCRIBE reaches the shard that owns each channel.
 */
export function redisClusterOptions(
  config: RedisClientConfig,
  role: 'command' | 'subscriber',
): ClusterOptions {
  const url = new URL(config.PUSHLINE_REDIS_URL);
  const { retryStrategy: _perNode, ...nodeOptions } =
    role === 'command' ? redisCommandOptions(config) : redisSubscriberOptions(config);
  return {
    redisOptions: {
      ...nodeOptions,
      ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
      ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
      ...(url.protocol === 'rediss:' ? { tls: {} } : {}),
    },
    clusterRetryStrategy: reconnectDelay,
    enableAutoPipelining: role === 'command',
    // An auto-pipeline goes to the node of its first command's key, and ioredis finds no key in
    // XGROUP CREATE <key> (it would route by the word CREATE and get MOVED inside a pipeline,
    // which it does not follow): sent on its own, it is routed and redirected like any command.
    autoPipeliningIgnoredCommands: ['xgroup'],
    shardedSubscribers: role === 'subscriber',
    slotsRefreshInterval: 5_000,
    slotsRefreshTimeout: Math.min(config.PUSHLINE_REDIS_CONNECT_TIMEOUT_MS, 2_000),
    lazyConnect: true,
  };
}

/** `host:port` startup nodes as ioredis takes them. */
function startupNodes(nodes: readonly string[]): { host: string; port: number }[] {
  return nodes.map((node) => {
    const at = node.lastIndexOf(':');
    return { host: node.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port: Number(node.slice(at + 1)) };
  });
}

/**
 * Bounds a cluster command from the moment it is issued, also while the cluster client holds it
 * (not connected yet, or waiting out a failover between retries). A node bounds only the time a
 * command spends with it, so a command parked between nodes would otherwise wait as long as the
 * cluster client keeps retrying.
 */
function boundEveryCommand(cluster: Cluster, timeoutMs: number): void {
  const send = cluster.sendCommand.bind(cluster);
  cluster.sendCommand = (
    command: Command,
    stream?: Parameters<Cluster['sendCommand']>[1],
    node?: unknown,
  ) => {
    command.setTimeout(timeoutMs);
    return send(command, stream, node);
  };
}

/**
 * A new lazy client (connect() it) on the configured Redis: a Cluster when
 * PUSHLINE_REDIS_CLUSTER_NODES is set, one Redis otherwise, with the bounds of
 * `redisCommandOptions` plus `options` (for one Redis).
 */
export function createRedisClient(config: RedisClientConfig, options: RedisOptions = {}): RedisClient {
  const nodes = config.PUSHLINE_REDIS_CLUSTER_NODES;
  if (nodes && nodes.length > 0) {
    const cluster = new Cluster(startupNodes(nodes), redisClusterOptions(config, 'command'));
    boundEveryCommand(cluster, config.PUSHLINE_REDIS_COMMAND_TIMEOUT_MS);
    return cluster;
  }
  return new Redis(config.PUSHLINE_REDIS_URL, {
    ...redisCommandOptions(config),
    ...options,
    lazyConnect: true,
  });
}

/**
 * The socket.io adapter's two connections, made from a service's client: a publisher with the
 * command bounds (its PUBSUB server counts are awaited) and a subscriber with the subscriber's
 * (see `redisSubscriberOptions`); on a cluster the subscriber has a connection per master.
 * Both are lazy; the caller connects and closes them.
 */
export function adapterClients(
  client: RedisClient,
  config: RedisClientConfig,
): { publisher: RedisClient; subscriber: RedisClient } {
  // Never auto-pipelined: a subscriber's (S)SUBSCRIBE must not wait in, or ride with, a batch,
  // and a broadcast is published at once.
  if (isCluster(client)) {
    const publisher = client.duplicate(undefined, {
      ...redisClusterOptions(config, 'command'),
      enableAutoPipelining: false,
    });
    boundEveryCommand(publisher, config.PUSHLINE_REDIS_COMMAND_TIMEOUT_MS);
    return { publisher, subscriber: client.duplicate(undefined, redisClusterOptions(config, 'subscriber')) };
  }
  const own = { enableAutoPipelining: false, lazyConnect: true };
  return {
    publisher: client.duplicate({ ...redisCommandOptions(config), ...own }),
    subscriber: client.duplicate({ ...redisSubscriberOptions(config), ...own }),
  };
}

export interface ServiceRedis {
  readonly redis: RedisClient;
  /** Set when the client was created here: the caller connects it in start() and closes it (closeRedis) in close(). */
  readonly owned: RedisClient | undefined;
}

/**
 * The Redis client of a service: the one a caller (a test) hands in, or a new lazy one the service
 * owns (`createRedisClient`). ioredis reconnects by itself; its errors are logged rather than left
 * to crash the process.
 */
export function serviceRedis(
  given: RedisClient | undefined,
  config: RedisClientConfig,
  logger: Logger,
  options: RedisOptions = {},
): ServiceRedis {
  if (given) return { redis: given, owned: undefined };
  const owned = createRedisClient(config, options);
  owned.on('error', (err: Error) => logger.warn({ err }, 'redis error'));
  return { redis: owned, owned };
}

/**
 * Closes a client politely (QUIT, which waits for the replies still due) and, if that fails or
 * takes longer than `graceMs` (a Redis that stopped answering), drops the connection; either way no
 * socket or reconnect timer is left behind.
 */
export async function closeRedis(client: RedisClient | undefined, graceMs = 2_000): Promise<void> {
  if (!client || client.status === 'end') return;
  let timer: NodeJS.Timeout | undefined;
  const quitting = client.quit();
  // Settles after the race when it is abandoned (disconnect rejects it); nobody waits for it then.
  quitting.catch(() => {});
  try {
    await Promise.race([
      quitting,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`redis QUIT unanswered after ${graceMs} ms`)), graceMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}
