export { RedisOfflineStore, outboxKey } from './redis-offline-store.ts';
export type {
  DrainOptions,
  OfflineInbox,
  RedisOfflineStoreOptions,
  StoreResult,
} from './redis-offline-store.ts';
export { OutboxRelay } from './outbox-relay.ts';
export type { OutboxRelayOptions } from './outbox-relay.ts';
