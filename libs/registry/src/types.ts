/** Where a device is connected right now. */
export interface DeviceRecord {
  readonly deviceId: string;
  readonly userId: string;
  readonly tenantId?: string | undefined;
  readonly serverId: string;
  /** Internal URL of the owning connection server (its delivery endpoint's base). */
  readonly serverUrl: string;
  /** Unique per connection; guards deletes and deliveries against a newer connection. */
  readonly connectionId: string;
  readonly connectedAt: number;
  readonly lastSeen: number;
}

export interface ServerLoad {
  readonly serverId: string;
  readonly serverUrl: string;
  /** Public URL devices connect to (a load balancer's, when one is in front). */
  readonly deviceUrl: string;
  /**
   * URL of this server's own device port, past any balancer: what reaches this server and no other
   * (the canary keeps one device on each server through it). Its host is the internal URL's.
   */
  readonly directUrl: string;
  readonly connections: number;
  readonly eventLoopDelayMs: number;
  readonly rssBytes: number;
  readonly heapUsedBytes: number;
  /** Handshakes in flight (connection opened, device not yet authenticated). Absent in older reports. */
  readonly pendingHandshakes?: number;
  /** Process CPU (user + system) over the last interval, in percent of one core. Absent in older reports. */
  readonly cpuPercent?: number;
  readonly draining: boolean;
  readonly at: number;
}

/** One connection whose registry entry should live `ttlSeconds` longer. */
export interface RefreshEntry {
  readonly deviceId: string;
  readonly connectionId: string;
  /** When given, the user's device set is kept alive at least as long as the record. */
  readonly userId?: string;
  /** When given, the server's device set is kept alive at least as long as the record. */
  readonly serverId?: string;
}

/** The global device registry: device → server, user → devices, and the live servers. */
export interface DeviceRegistry {
  /** Records the connection as the device's current one; returns the record it replaced, if any. */
  register(record: DeviceRecord, ttlSeconds: number): Promise<DeviceRecord | null>;
  /** Removes the entry only if it still belongs to `connectionId` (a newer connection wins). */
  unregister(deviceId: string, connectionId: string): Promise<boolean>;
  lookup(deviceId: string): Promise<DeviceRecord | null>;
  lookupMany(deviceIds: readonly string[]): Promise<(DeviceRecord | null)[]>;
  /** The user's devices that are connected now. */
  userDevices(userId: string): Promise<DeviceRecord[]>;
  /** Extends the TTL of entries that still belong to the given connections; returns how many did. */
  refresh(entries: readonly RefreshEntry[], ttlSeconds: number): Promise<number>;
  /** Removes every entry still owned by `serverId` (a server restarting after a crash). */
  clearServer(serverId: string): Promise<number>;
  reportLoad(load: ServerLoad, ttlSeconds: number): Promise<void>;
  removeLoad(serverId: string): Promise<void>;
  /** Servers whose load report has not expired. */
  liveServers(): Promise<ServerLoad[]>;
}

/**
 * What a check found: whether Redis may have lost some of a server's entries since they were last
 * known to be there, and which. On one Redis that is all of them (a restart without persistence, a
 * flush); on a cluster, those on the shards whose mark is gone (the shard restarted empty) or whose
 * master changed (a replica took over, possibly without the writes its master acknowledged last).
 */
export interface RegistryCheck {
  readonly lost: boolean;
  /** Whether the device's entry lives on a shard that may have lost it. */
  readonly affects: (deviceId: string) => boolean;
  /** The shards that may have lost entries, described for logs. */
  readonly lostShards: readonly string[];
}

/**
 * How a connection server notices that Redis lost its entries (a restart without persistence, a
 * failover, a flush) and puts them back while its devices stay connected.
 */
export interface RegistryRecovery {
  /**
   * Records, on every shard, that it holds `serverId`'s entries; each mark lives `ttlSeconds`.
   * `since` is the check a restore started from: its view of the shards is recorded, so a
   * failover during the restore still shows at the next check.
   */
  markServer(serverId: string, ttlSeconds: number, since?: RegistryCheck): Promise<void>;
  /** Whether every shard still holds the mark, extending it; false means Redis lost entries. */
  checkServerMark(serverId: string, ttlSeconds: number): Promise<boolean>;
  /**
   * Extends the marks and says which entries Redis may have lost: those of shards that lost the
   * mark, and of shards whose master changed since the last `markServer`.
   */
  checkServer(serverId: string, ttlSeconds: number): Promise<RegistryCheck>;
  /**
   * Writes each record (and its user and server sets) unless the device's entry belongs to another
   * connection (it moved meanwhile), in one batch; returns how many entries were missing.
   */
  restore(records: readonly DeviceRecord[], ttlSeconds: number): Promise<number>;
  /** Which of `serverIds` have their mark on every shard now (read only: nothing is extended). */
  serversMarked(serverIds: readonly string[]): Promise<Set<string>>;
}
