export type { DeviceRecord, DeviceRegistry, RefreshEntry, RegistryRecovery, ServerLoad } from './types.ts';
export { RedisDeviceRegistry } from './redis-registry.ts';
export type { RedisDeviceRegistryOptions } from './redis-registry.ts';
export { serviceRedis, closeRedis, redisCommandOptions, redisSubscriberOptions } from './redis-client.ts';
export type { ServiceRedis, RedisClientConfig } from './redis-client.ts';
