import { randomBytes } from 'node:crypto';
import { createRedisClient, isCluster, sendAll, type RedisClient } from '@pushline/registry';
import type { RedisOptions } from 'ioredis';

/** Set by test/global-setup.ts, which starts one real Kafka and one real Redis per test run. */
export const TEST_KAFKA_ENV = 'PUSHLINE_TEST_KAFKA_BROKERS';
export const TEST_REDIS_ENV = 'PUSHLINE_TEST_REDIS_URL';
/** Set by test/global-setup.ts when the run's Redis is a cluster (PUSHLINE_TEST_REDIS=cluster). */
export const TEST_REDIS_CLUSTER_ENV = 'PUSHLINE_TEST_REDIS_CLUSTER_NODES';

export interface TestInfra {
  readonly kafkaBrokers: string[];
  /** The Redis URL, or the first node's when the run's Redis is a cluster. */
  readonly redisUrl: string;
  /** host:port of every node when the run's Redis is a cluster. */
  readonly redisClusterNodes: string[] | undefined;
  /** PUSHLINE_REDIS_URL (and PUSHLINE_REDIS_CLUSTER_NODES) for a service's config. */
  readonly redisEnv: Readonly<Record<string, string>>;
}

export function testInfra(): TestInfra {
  const brokers = process.env[TEST_KAFKA_ENV];
  const redisUrl = process.env[TEST_REDIS_ENV];
  if (!brokers || !redisUrl) {
    throw new Error(
      `${TEST_KAFKA_ENV} and ${TEST_REDIS_ENV} are unset: run tests through \`npm test\` (its global setup starts Kafka and Redis)`,
    );
  }
  const cluster = process.env[TEST_REDIS_CLUSTER_ENV];
  const redisClusterNodes = cluster ? cluster.split(',') : undefined;
  return {
    kafkaBrokers: brokers.split(','),
    redisUrl,
    redisClusterNodes,
    redisEnv: {
      PUSHLINE_REDIS_URL: redisUrl,
      ...(cluster ? { PUSHLINE_REDIS_CLUSTER_NODES: cluster } : {}),
    },
  };
}

/**
 * A new client of the run's Redis, one server or a cluster (it connects on its first command;
 * `quit()` it). `options` apply to a single Redis; a cluster client gets the services' options.
 */
export function testRedis(
  options: RedisOptions = {},
  infra: Pick<TestInfra, 'redisUrl' | 'redisClusterNodes'> = testInfra(),
): RedisClient {
  return createRedisClient(
    {
      PUSHLINE_REDIS_URL: infra.redisUrl,
      PUSHLINE_REDIS_CLUSTER_NODES: infra.redisClusterNodes,
      PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: 10_000,
      PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: 3_000,
      PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: 20,
    },
    { retryStrategy: () => 100, ...options },
  );
}

/** A prefix unique to one test, for topics and keys, so tests never see each other's data. */
export function uniquePrefix(label: string): string {
  return `t-${label.replace(/[^a-zA-Z0-9]/g, '').slice(0, 20)}-${randomBytes(4).toString('hex')}`;
}

/** A 32+ character secret for tests. */
export function testSecret(): string {
  return randomBytes(32).toString('hex');
}

/** Keys matching `pattern` on every master (KEYS on one Redis sees them all; on a cluster, one node's). */
export async function keysMatching(redis: RedisClient, pattern: string): Promise<string[]> {
  if (!isCluster(redis)) return redis.keys(pattern);
  const perNode = await Promise.all(redis.nodes('master').map((node) => node.keys(pattern)));
  return perNode.flat();
}

/** Deletes `keys` one command each (on a cluster they may sit on as many slots). */
export async function deleteKeys(redis: RedisClient, keys: readonly string[]): Promise<void> {
  await sendAll(
    redis,
    keys.map((key) => ['del', key] as const),
  );
}
