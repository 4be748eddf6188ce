import type { DeviceRecord, DeviceRegistry, ServerLoad } from '@pushline/registry';

export function deviceRecord(
  overrides: Partial<DeviceRecord> & Pick<DeviceRecord, 'deviceId'>,
): DeviceRecord {
  return {
    userId: 'user-1',
    serverId: 'srv-a',
    serverUrl: 'http://127.0.0.1:1',
    connectionId: `conn-${overrides.deviceId}`,
    connectedAt: Date.now(),
    lastSeen: Date.now(),
    ...overrides,
  };
}

export function serverLoad(
  overrides: Partial<ServerLoad> & Pick<ServerLoad, 'serverId' | 'serverUrl'>,
): ServerLoad {
  return {
    deviceUrl: 'http://127.0.0.1:1',
    directUrl: 'http://127.0.0.1:1',
    connections: 0,
    eventLoopDelayMs: 0,
    rssBytes: 0,
    heapUsedBytes: 0,
    draining: false,
    at: Date.now(),
    ...overrides,
  };
}

/**
 * The real registry, counting the reads the cache is meant to save; `failLookups` makes lookups
 * reject as if Redis were down.
 */
export class CountingRegistry implements DeviceRegistry {
  readonly #inner: DeviceRegistry;
  lookups = 0;
  userDeviceReads = 0;
  liveServerReads = 0;
  failLookups = false;

  constructor(inner: DeviceRegistry) {
    this.#inner = inner;
  }

  lookup(deviceId: string): Promise<DeviceRecord | null> {
    this.lookups++;
    if (this.failLookups) return Promise.reject(new Error('redis down'));
    return this.#inner.lookup(deviceId);
  }
  userDevices(userId: string): Promise<DeviceRecord[]> {
    this.userDeviceReads++;
    return this.#inner.userDevices(userId);
  }
  liveServers(): Promise<ServerLoad[]> {
    this.liveServerReads++;
    return this.#inner.liveServers();
  }
  register(record: DeviceRecord, ttlSeconds: number) {
    return this.#inner.register(record, ttlSeconds);
  }
  unregister(deviceId: string, connectionId: string) {
    return this.#inner.unregister(deviceId, connectionId);
  }
  lookupMany(deviceIds: readonly string[]) {
    return this.#inner.lookupMany(deviceIds);
  }
  refresh(entries: readonly { deviceId: string; connectionId: string }[], ttlSeconds: number) {
    return this.#inner.refresh(entries, ttlSeconds);
  }
  clearServer(serverId: string) {
    return this.#inner.clearServer(serverId);
  }
  reportLoad(load: ServerLoad, ttlSeconds: number) {
    return this.#inner.reportLoad(load, ttlSeconds);
  }
  removeLoad(serverId: string) {
    return this.#inner.removeLoad(serverId);
  }
}
