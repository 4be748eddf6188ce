export type { DeviceRecord, DeviceRegistry, RefreshEntry, ServerLoad } from './types.ts';
export { RedisDeviceRegistry } from './redis-registry.ts';
export type { RedisDeviceRegistryOptions } from './redis-registry.ts';
export { serviceRedis } from './redis-client.ts';
export type { ServiceRedis } from './redis-client.ts';
