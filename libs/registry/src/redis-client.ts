import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '@pushline/telemetry';

/** The Redis variables of every service's config (`commonEnv` in @pushline/config). */
export interface RedisClientConfig {
  readonly PUSHLINE_REDIS_URL: string;
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
    retryStrategy: (attempt: number) => Math.min(attempt * 50, MAX_RECONNECT_DELAY_MS),
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
    retryStrategy: (attempt: number) => Math.min(attempt * 50, MAX_RECONNECT_DELAY_MS),
    keepAlive: KEEPALIVE_MS,
    autoResubscribe: true,
  };
}

export interface ServiceRedis {
  readonly redis: Redis;
  /** Set when the client was created here: the caller connects it in start() and closes it (closeRedis) in close(). */
  readonly owned: Redis | undefined;
}

/**
 * The Redis client of a service: the one a caller (a test) hands in, or a new lazy one the service
 * owns, created with the bounded command options above plus `options`. ioredis reconnects by
 * itself; its errors are logged rather than left to crash the process.
 */
export function serviceRedis(
  given: Redis | undefined,
  config: RedisClientConfig,
  logger: Logger,
  options: RedisOptions = {},
): ServiceRedis {
  if (given) return { redis: given, owned: undefined };
  const owned = new Redis(config.PUSHLINE_REDIS_URL, {
    ...redisCommandOptions(config),
    ...options,
    lazyConnect: true,
  });
  owned.on('error', (err: Error) => logger.warn({ err }, 'redis error'));
  return { redis: owned, owned };
}

/**
 * Closes a client politely (QUIT, which waits for the replies still due) and, if that fails or
 * takes longer than `graceMs` (a Redis that stopped answering), drops the connection; either way no
 * socket or reconnect timer is left behind.
 */
export async function closeRedis(client: Redis | undefined, graceMs = 2_000): Promise<void> {
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
