export { RedisOfflineStore } from './redis-offline-store.ts';
export type {
  DrainOptions,
  OfflineInbox,
  RedisOfflineStoreOptions,
  StoreResult,
} from './redis-offline-store.ts';
