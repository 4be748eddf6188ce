import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from '@pushline/telemetry';

export interface ServiceRedis {
  readonly redis: Redis;
  /** Set when the client was created here: the caller connects it in start() and quits it in close(). */
  readonly owned: Redis | undefined;
}

/**
 * The Redis client of a service: the one a caller (a test) hands in, or a new lazy one the service
 * owns, created with `options` (default: ioredis's). ioredis reconnects by itself; its errors are
 * logged rather than left to crash the process.
 */
export function serviceRedis(
  given: Redis | undefined,
  url: string,
  logger: Logger,
  options: RedisOptions = {},
): ServiceRedis {
  if (given) return { redis: given, owned: undefined };
  const owned = new Redis(url, { ...options, lazyConnect: true });
  owned.on('error', (err: Error) => logger.warn({ err }, 'redis error'));
  return { redis: owned, owned };
}
