export type {
  DeviceRecord,
  DeviceRegistry,
  RefreshEntry,
  RegistryCheck,
  RegistryRecovery,
  ServerLoad,
} from './types.ts';
export { RegistryIncompleteError, RegistryWatch } from './registry-watch.ts';
export type { RegistryCompleteness, RegistryWatchOptions } from './registry-watch.ts';
export { RedisDeviceRegistry, REGISTRY_SCRIPTS, registryKeys } from './redis-registry.ts';
export type { RedisDeviceRegistryOptions } from './redis-registry.ts';
export {
  adapterClients,
  closeRedis,
  createRedisClient,
  isCluster,
  redisClusterOptions,
  redisCommandOptions,
  redisSubscriberOptions,
  serviceRedis,
} from './redis-client.ts';
export type { RedisClient, ServiceRedis, RedisClientConfig } from './redis-client.ts';
export { sendAll, sendAllSettled, sendGrouped } from './batch.ts';
export type { BatchCall, BatchReply, GroupedScript } from './batch.ts';
export {
  CLUSTER_SLOTS,
  SINGLE_SHARD,
  commonSlot,
  keySlot,
  shardHolds,
  shardsFromSlots,
  slotTags,
  spreadTags,
} from './cluster-keys.ts';
export type { RedisShard } from './cluster-keys.ts';
