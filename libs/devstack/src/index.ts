// The only public entry of @pushline/devstack: real Kafka (KRaft, from Maven Central jars),
// real redis-server (or a Redis Cluster of them) and (for the observability tests) real Prometheus on free loopback ports for
// dev, tests and benchmarks, with no orphans left behind even when the parent process is SIGKILLed.
export { KAFKA_VERSION, ensureKafkaJars } from './kafka-jars.ts';
export { startKafka } from './kafka.ts';
export type { KafkaInstance, StartKafkaOptions } from './kafka.ts';
export { startKafkaCluster } from './kafka-cluster.ts';
export type { KafkaCluster, KafkaClusterNode, StartKafkaClusterOptions } from './kafka-cluster.ts';
export { ensureRedisServer, redisConfigArgs, startRedis } from './redis.ts';
export type { RedisEvictionPolicy, RedisInstance, RedisPersistence, StartRedisOptions } from './redis.ts';
export { ensureRedisCli, parseClusterNodes, respCommand, startRedisCluster } from './redis-cluster.ts';
export type {
  ClusterNodeInfo,
  RedisCluster,
  RedisClusterNode,
  StartRedisClusterOptions,
} from './redis-cluster.ts';
export { ensurePrometheus, startPrometheus } from './prometheus.ts';
export type { PrometheusInstance, PrometheusTools, StartPrometheusOptions } from './prometheus.ts';
export { ensureHaproxy, startHaproxy } from './haproxy.ts';
export type { HaproxyInstance, StartHaproxyOptions } from './haproxy.ts';
export { startDevstack } from './devstack.ts';
export type { Devstack, StartDevstackOptions } from './devstack.ts';
export { freePort } from './ports.ts';
// The guardian that gives every process above its no-orphan guarantee, for launching other servers.
export { spawnGuarded } from './guard.ts';
export type { ExitInfo, GuardedProcess, SpawnGuardedOptions } from './guard.ts';
