export {
  DEFAULT_CLUSTER_PARTITIONS,
  RedisOfflineStore,
  offlineKeys,
  offlinePartitions,
} from './redis-offline-store.ts';
export { OFFLINE_SCRIPTS } from './scripts.ts';
export type {
  DrainOptions,
  OfflineInbox,
  OfflineKeys,
  RedisOfflineStoreOptions,
  StoreResult,
} from './redis-offline-store.ts';
export { OutboxRelay } from './outbox-relay.ts';
export type { OutboxRelayOptions } from './outbox-relay.ts';
