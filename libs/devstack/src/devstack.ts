import { startKafkaCluster } from './kafka-cluster.ts';
import type { KafkaCluster } from './kafka-cluster.ts';
import { startKafka } from './kafka.ts';
import type { KafkaInstance } from './kafka.ts';
import { startRedis } from './redis.ts';
import type { RedisInstance, StartRedisOptions } from './redis.ts';
import { startRedisCluster } from './redis-cluster.ts';
import type { RedisCluster } from './redis-cluster.ts';
import { defaultCacheDir, noLog } from './util.ts';
import type { LogFn } from './util.ts';
import path from 'node:path';

export interface Devstack {
  readonly kafkaBrokers: string[];
  /**
   * '' when Redis was neither requested nor given. For a cluster, the URL of its first node: the
   * services take the cluster from `redisClusterNodes` and only credentials and scheme from it.
   */
  readonly redisUrl: string;
  /** host:port of every node when Redis is a cluster (started here or PUSHLINE_REDIS_CLUSTER_NODES). */
  readonly redisClusterNodes: string[] | undefined;
  /** true where the address came from PUSHLINE_KAFKA_BROKERS / PUSHLINE_REDIS_URL and nothing was started. */
  readonly external: { kafka: boolean; redis: boolean };
  /** The processes this devstack started, if any: one broker, or a cluster (`kafkaNodes` > 1). */
  readonly kafka: KafkaInstance | undefined;
  readonly kafkaCluster: KafkaCluster | undefined;
  readonly redis: RedisInstance | undefined;
  readonly redisCluster: RedisCluster | undefined;
  /**
   * PUSHLINE_KAFKA_BROKERS / PUSHLINE_REDIS_URL (and PUSHLINE_REDIS_CLUSTER_NODES) for child
   * processes (services, benchmarks).
   */
  readonly env: Readonly<Record<string, string>>;
  /** Idempotent: every call returns the same promise. */
  stop(): Promise<void>;
}

export interface StartDevstackOptions {
  /** Where PUSHLINE_KAFKA_BROKERS, PUSHLINE_REDIS_URL and PUSHLINE_CACHE_DIR are read. Default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Parent for kafka/ and redis/ work dirs (kept). Default: temp dirs, removed by stop(). */
  workDir?: string;
  log?: LogFn;
  /** Set false when the caller needs no Kafka. Default true. */
  kafka?: boolean;
  /**
   * Brokers to start: 1 (the default) runs one broker, more a KRaft cluster of that many. Default
   * from PUSHLINE_DEV_KAFKA_NODES.
   */
  kafkaNodes?: number;
  /** Set false when the caller needs no Redis. Default true. */
  redis?: boolean;
  /**
   * Start a Redis Cluster (3 masters, each with a replica) instead of one redis-server. Default
   * from PUSHLINE_DEV_REDIS_CLUSTER (`1`/`true`); ignored when PUSHLINE_REDIS_URL or
   * PUSHLINE_REDIS_CLUSTER_NODES names a Redis.
   */
  redisCluster?: boolean;
  /**
   * Persistence, memory limits and work dir of a Redis started here (ignored for
   * PUSHLINE_REDIS_URL); `workDir` above, when given, decides the dir.
   */
  redisOptions?: Pick<StartRedisOptions, 'persistence' | 'maxmemory' | 'maxmemoryPolicy' | 'workDir'>;
  startTimeoutMs?: number;
}

function externalBrokers(env: NodeJS.ProcessEnv): string[] {
  return (env['PUSHLINE_KAFKA_BROKERS'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Kafka and Redis for dev, tests and benchmarks: the ones named in env, or real local processes. */
export async function startDevstack(opts: StartDevstackOptions = {}): Promise<Devstack> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? noLog;
  const givenBrokers = externalBrokers(env);
  const givenClusterNodes = (env['PUSHLINE_REDIS_CLUSTER_NODES'] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const givenRedis =
    (env['PUSHLINE_REDIS_URL'] ?? '').trim() ||
    (givenClusterNodes[0] === undefined ? '' : `redis://${givenClusterNodes[0]}`);
  const externalKafka = givenBrokers.length > 0;
  const externalRedis = givenRedis !== '';
  const sub = (name: string): { workDir?: string } =>
    opts.workDir === undefined ? {} : { workDir: path.join(opts.workDir, name) };
  const timeout = opts.startTimeoutMs === undefined ? {} : { startTimeoutMs: opts.startTimeoutMs };

  if (externalKafka) log(`kafka: using PUSHLINE_KAFKA_BROKERS=${givenBrokers.join(',')}`);
  if (externalRedis) {
    log(
      givenClusterNodes.length > 0
        ? `redis: using the cluster PUSHLINE_REDIS_CLUSTER_NODES=${givenClusterNodes.join(',')}`
        : `redis: using PUSHLINE_REDIS_URL=${givenRedis}`,
    );
  }

  const kafkaNodes = opts.kafkaNodes ?? kafkaNodesFromEnv(env);
  const wantKafka = (opts.kafka ?? true) && !externalKafka;
  const wantRedis = (opts.redis ?? true) && !externalRedis;
  const wantRedisCluster = wantRedis && (opts.redisCluster ?? redisClusterFromEnv(env));
  const [kafkaResult, clusterResult, redisResult, redisClusterResult] = await Promise.allSettled([
    wantKafka && kafkaNodes === 1
      ? startKafka({ cacheDir: defaultCacheDir(env), log, ...sub('kafka'), ...timeout })
      : undefined,
    wantKafka && kafkaNodes > 1
      ? startKafkaCluster({
          nodes: kafkaNodes,
          cacheDir: defaultCacheDir(env),
          log,
          ...sub('kafka'),
          ...timeout,
        })
      : undefined,
    wantRedis && !wantRedisCluster
      ? startRedis({ log, ...opts.redisOptions, ...sub('redis'), ...timeout })
      : undefined,
    wantRedisCluster
      ? startRedisCluster({
          log,
          ...(opts.redisOptions?.maxmemory === undefined ? {} : { maxmemory: opts.redisOptions.maxmemory }),
          ...(opts.redisOptions?.maxmemoryPolicy === undefined
            ? {}
            : { maxmemoryPolicy: opts.redisOptions.maxmemoryPolicy }),
          ...sub('redis-cluster'),
          ...timeout,
        })
      : undefined,
  ]);
  const kafka = kafkaResult.status === 'fulfilled' ? kafkaResult.value : undefined;
  const kafkaCluster = clusterResult.status === 'fulfilled' ? clusterResult.value : undefined;
  const redis = redisResult.status === 'fulfilled' ? redisResult.value : undefined;
  const redisCluster = redisClusterResult.status === 'fulfilled' ? redisClusterResult.value : undefined;
  const failures = [kafkaResult, clusterResult, redisResult, redisClusterResult].flatMap((r) =>
    r.status === 'rejected' ? [r.reason as unknown] : [],
  );
  if (failures.length > 0) {
    await Promise.all([kafka?.stop(), kafkaCluster?.stop(), redis?.stop(), redisCluster?.stop()]);
    if (failures.length === 1) throw failures[0];
    throw new AggregateError(failures, 'devstack: Kafka and Redis both failed to start');
  }

  const kafkaBrokers = externalKafka ? givenBrokers : (kafka?.brokers ?? kafkaCluster?.brokers ?? []);
  const redisClusterNodes = externalRedis
    ? givenClusterNodes.length > 0
      ? givenClusterNodes
      : undefined
    : redisCluster?.startupNodes;
  const redisUrl = externalRedis
    ? givenRedis
    : (redis?.url ?? (redisCluster ? `redis://${redisCluster.startupNodes[0] as string}` : ''));
  const childEnv: Record<string, string> = {};
  if (kafkaBrokers.length > 0) childEnv['PUSHLINE_KAFKA_BROKERS'] = kafkaBrokers.join(',');
  if (redisUrl !== '') childEnv['PUSHLINE_REDIS_URL'] = redisUrl;
  if (redisClusterNodes) childEnv['PUSHLINE_REDIS_CLUSTER_NODES'] = redisClusterNodes.join(',');

  let stopping: Promise<void> | undefined;
  return {
    kafkaBrokers,
    redisUrl,
    redisClusterNodes,
    external: { kafka: externalKafka, redis: externalRedis },
    kafka,
    kafkaCluster,
    redis,
    redisCluster,
    env: childEnv,
    stop(): Promise<void> {
      stopping ??= Promise.all([
        kafka?.stop(),
        kafkaCluster?.stop(),
        redis?.stop(),
        redisCluster?.stop(),
      ]).then(() => undefined);
      return stopping;
    },
  };
}

function redisClusterFromEnv(env: NodeJS.ProcessEnv): boolean {
  const raw = (env['PUSHLINE_DEV_REDIS_CLUSTER'] ?? '').trim().toLowerCase();
  if (raw === '' || raw === '0' || raw === 'false' || raw === 'no') return false;
  if (raw === '1' || raw === 'true' || raw === 'yes') return true;
  throw new Error(`PUSHLINE_DEV_REDIS_CLUSTER must be 1/true or 0/false, not ${JSON.stringify(raw)}`);
}

function kafkaNodesFromEnv(env: NodeJS.ProcessEnv): number {
  const raw = (env['PUSHLINE_DEV_KAFKA_NODES'] ?? '').trim();
  if (raw === '') return 1;
  const nodes = Number(raw);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 9) {
    throw new Error(
      `PUSHLINE_DEV_KAFKA_NODES must be a whole number from 1 to 9, not ${JSON.stringify(raw)}`,
    );
  }
  return nodes;
}
