import { sendAll, type BatchCall } from './batch.ts';
import {
  SINGLE_SHARD,
  keySlot,
  shardHolds,
  shardsFromSlots,
  slotTags,
  type RedisShard,
} from './cluster-keys.ts';
import { isCluster, type RedisClient } from './redis-client.ts';
import type {
  DeviceRecord,
  DeviceRegistry,
  RefreshEntry,
  RegistryCheck,
  RegistryRecovery,
  ServerLoad,
} from './types.ts';

/**
 * Key names of the registry under `prefix`. Every key carries a hash tag, so that on a Redis
 * Cluster each script and MULTI touches one slot:
 *   P dev:{<deviceId>}         hash  s=serverId u=serverUrl c=connectionId uid tid ca=connectedAt ls=lastSeen   (TTL)
 *   P user:{<userId>}          set   deviceIds; a member whose record is gone or moved to another user is pruned when read   (TTL)
 *   P srv:{<serverId>}         set   deviceIds registered through that server, for clearing after a crash   (TTL)
 *   P {servers}                set   serverIds that have reported load
 *   P {servers}:load:<id>      string JSON ServerLoad   (TTL)
 *   P mark:{<slot tag>}:<id>   string "1": this shard holds the server's entries; gone = it lost them   (TTL)
 * A device's hash, its user's set and its server's set live on different slots, so no script
 * touches two of them: the compare-and-set on the device hash is the atomic part, and the sets
 * are indexes written next to it (docs/decisions/0022-redis-cluster.md).
 */
export function registryKeys(prefix: string) {
  return {
    device: (deviceId: string) => `${prefix}dev:{${deviceId}}`,
    user: (userId: string) => `${prefix}user:{${userId}}`,
    server: (serverId: string) => `${prefix}srv:{${serverId}}`,
    servers: `${prefix}{servers}`,
    load: (serverId: string) => `${prefix}{servers}:load:${serverId}`,
    /** The server's mark on the shard whose first slot has tag `tag`. */
    mark: (serverId: string, tag: string) => `${prefix}mark:{${tag}}:${serverId}`,
  };
}

const FIELDS = ['s', 'u', 'c', 'uid', 'tid', 'ca', 'ls'] as const;

// KEYS dev [user srv]; ARGV s u c uid tid ca ttl deviceId. Replaces the device's record, returns
// the one it replaced. Given the index sets too (one Redis, where every key is on one node), it
// adds the device to them in the same step, as INDEX_ADD would: a connect is then one command. On
// a cluster the sets are on other slots and INDEX_ADD writes them next to it.
const REGISTER = `
local prev = redis.call('HMGET', KEYS[1], 's', 'u', 'c', 'uid', 'tid', 'ca', 'ls')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', ARGV[1], 'u', ARGV[2], 'c', ARGV[3], 'uid', ARGV[4], 'ca', ARGV[6], 'ls', ARGV[6])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'tid', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[7])
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], ARGV[8])
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[7]) then redis.call('EXPIRE', KEYS[i], ARGV[7]) end
end
return prev
`;

// KEYS set; ARGV ttl member... Adds to an index set and keeps it alive at least `ttl`: only
// lengthened, never shortened, since other devices' records may need it longer.
const INDEX_ADD = `
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
`;

// KEYS set; ARGV ttl. Lengthens an existing index set's TTL to at least `ttl`.
const INDEX_TOUCH = `
local ttl = redis.call('TTL', KEYS[1])
if ttl ~= -2 and ttl < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return 1
`;

// KEYS dev; ARGV c. Compare-and-delete: a device that already reconnected elsewhere keeps its new
// entry. Returns the removed record's server, or false.
const UNREGISTER = `
local owner = redis.call('HMGET', KEYS[1], 'c', 's')
if owner[1] ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
return owner[2]
`;

// KEYS dev; ARGV c ttl now. Extends the entry if it still belongs to the connection.
const REFRESH = `
if redis.call('HGET', KEYS[1], 'c') == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[1], 'ls', ARGV[3])
  return 1
end
return 0
`;

// KEYS dev; ARGV s u c uid tid ca ls ttl. Puts back a live connection's entry after Redis lost it,
// never over another connection's entry (the device may have moved meanwhile).
// 1 = written (it was missing), 2 = already ours, 0 = another's.
const RESTORE = `
local owner = redis.call('HGET', KEYS[1], 'c')
if owner and owner ~= ARGV[3] then return 0 end
if owner then return 2 end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'u', ARGV[2], 'c', ARGV[3], 'uid', ARGV[4], 'ca', ARGV[6], 'ls', ARGV[7])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'tid', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[8])
return 1
`;

// KEYS dev; ARGV s. Deletes the entry if that server still owns it.
const CLEAR_ONE = `
if redis.call('HGET', KEYS[1], 's') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`;

/**
 * Every script the registry sends, with the number of keys each takes. `pushlineRegisterIndexed`
 * (the device's hash and both index sets) is sent to one Redis only; on a cluster every script
 * gets one key.
 */
export const REGISTRY_SCRIPTS = {
  pushlineRegister: { numberOfKeys: 1, lua: REGISTER },
  pushlineRegisterIndexed: { numberOfKeys: 3, lua: REGISTER },
  pushlineIndexAdd: { numberOfKeys: 1, lua: INDEX_ADD },
  pushlineIndexTouch: { numberOfKeys: 1, lua: INDEX_TOUCH },
  pushlineUnregister: { numberOfKeys: 1, lua: UNREGISTER },
  pushlineRefresh: { numberOfKeys: 1, lua: REFRESH },
  pushlineRestore: { numberOfKeys: 1, lua: RESTORE },
  pushlineClearOne: { numberOfKeys: 1, lua: CLEAR_ONE },
} as const;

type RegistryRedis = RedisClient & {
  pushlineRegister(...args: (string | number)[]): Promise<(string | null)[]>;
  pushlineUnregister(...args: (string | number)[]): Promise<string | null>;
};

/**
 * What a check saw: each shard's master, so that the mark written after a restore describes the
 * topology the restore worked from. A failover after it shows as a changed master at the next check.
 */
interface Observed extends RegistryCheck {
  readonly shards: readonly RedisShard[];
}

export interface RedisDeviceRegistryOptions {
  /** A connected ioredis client (one Redis or a cluster); the registry does not own it and never closes it. */
  readonly redis: RedisClient;
  /** Prefix of every key, e.g. `pushline:`. */
  readonly keyPrefix: string;
}

export class RedisDeviceRegistry implements DeviceRegistry, RegistryRecovery {
  readonly #redis: RegistryRedis;
  readonly #keys: ReturnType<typeof registryKeys>;
  /** serverId → shard (first slot) → its master when the server's entries were last known there. */
  readonly #masters = new Map<string, Map<number, string>>();

  constructor(options: RedisDeviceRegistryOptions) {
    const redis = options.redis;
    for (const [name, definition] of Object.entries(REGISTRY_SCRIPTS)) {
      if (!(name in redis)) redis.defineCommand(name, definition);
    }
    this.#redis = redis as RegistryRedis;
    this.#keys = registryKeys(options.keyPrefix);
  }

  async register(record: DeviceRecord, ttlSeconds: number): Promise<DeviceRecord | null> {
    const args = [
      record.serverId,
      record.serverUrl,
      record.connectionId,
      record.userId,
      record.tenantId ?? '',
      record.connectedAt,
      ttlSeconds,
      record.deviceId,
    ];
    const device = this.#keys.device(record.deviceId);
    const user = this.#keys.user(record.userId);
    const server = this.#keys.server(record.serverId);
    const [prev] = isCluster(this.#redis)
      ? await sendAll(this.#redis, [
          ['pushlineRegister', device, ...args],
          ['pushlineIndexAdd', user, ttlSeconds, record.deviceId],
          ['pushlineIndexAdd', server, ttlSeconds, record.deviceId],
        ])
      : await sendAll(this.#redis, [['pushlineRegisterIndexed', device, user, server, ...args]]);
    return fromFields(record.deviceId, prev as (string | null)[]);
  }

  async unregister(deviceId: string, connectionId: string): Promise<boolean> {
    const serverId = await this.#redis.pushlineUnregister(this.#keys.device(deviceId), connectionId);
    if (serverId === null) return false;
    // The user's set keeps the member until a read finds its record gone (userDevices): removing
    // it here could race a register of the same device on another server and drop the new member.
    await this.#redis.srem(this.#keys.server(serverId), deviceId);
    return true;
  }

  async lookup(deviceId: string): Promise<DeviceRecord | null> {
    const fields = await this.#redis.hmget(this.#keys.device(deviceId), ...FIELDS);
    return fromFields(deviceId, fields);
  }

  async lookupMany(deviceIds: readonly string[]): Promise<(DeviceRecord | null)[]> {
    const replies = await sendAll(
      this.#redis,
      deviceIds.map((id): BatchCall => ['hmget', this.#keys.device(id), ...FIELDS]),
    );
    return deviceIds.map((id, i) => fromFields(id, replies[i] as (string | null)[] | null));
  }

  async userDevices(userId: string): Promise<DeviceRecord[]> {
    const ids = await this.#redis.smembers(this.#keys.user(userId));
    const records = await this.lookupMany(ids);
    const live: DeviceRecord[] = [];
    const stale: string[] = [];
    records.forEach((record, i) => {
      if (record && record.userId === userId) live.push(record);
      else if (ids[i] !== undefined) stale.push(ids[i]);
    });
    if (stale.length > 0) await this.#redis.srem(this.#keys.user(userId), ...stale);
    return live;
  }

  async refresh(entries: readonly RefreshEntry[], ttlSeconds: number): Promise<number> {
    if (entries.length === 0) return 0;
    const now = Date.now();
    const replies = await sendAll(
      this.#redis,
      entries.map((e): BatchCall => [
        'pushlineRefresh',
        this.#keys.device(e.deviceId),
        e.connectionId,
        ttlSeconds,
        now,
      ]),
    );
    const sets = new Set<string>();
    entries.forEach((e, i) => {
      if (replies[i] !== 1) return;
      if (e.userId !== undefined) sets.add(this.#keys.user(e.userId));
      if (e.serverId !== undefined) sets.add(this.#keys.server(e.serverId));
    });
    await sendAll(
      this.#redis,
      [...sets].map((key): BatchCall => ['pushlineIndexTouch', key, ttlSeconds]),
    );
    return replies.filter((r) => r === 1).length;
  }

  async clearServer(serverId: string): Promise<number> {
    const key = this.#keys.server(serverId);
    let cleared = 0;
    let cursor = '0';
    do {
      const [next, ids] = await this.#redis.sscan(key, cursor, 'COUNT', 500);
      cursor = next;
      const replies = await sendAll(
        this.#redis,
        ids.map((id): BatchCall => ['pushlineClearOne', this.#keys.device(id), serverId]),
      );
      cleared += replies.filter((r) => r === 1).length;
    } while (cursor !== '0');
    const shards = await this.#shards();
    await sendAll(this.#redis, [
      ['del', key],
      ...this.#markKeys(serverId, shards).map((mark): BatchCall => ['del', mark]),
    ]);
    this.#masters.delete(serverId);
    return cleared;
  }

  async markServer(serverId: string, ttlSeconds: number, since?: RegistryCheck): Promise<void> {
    const shards = (since as Observed | undefined)?.shards ?? (await this.#shards());
    await sendAll(
      this.#redis,
      this.#markKeys(serverId, shards).map((mark): BatchCall => ['set', mark, '1', 'EX', ttlSeconds]),
    );
    this.#masters.set(serverId, new Map(shards.map((s) => [s.firstSlot, s.masterId])));
  }

  async checkServerMark(serverId: string, ttlSeconds: number): Promise<boolean> {
    const shards = await this.#shards();
    const kept = await this.#extendMarks(serverId, shards, ttlSeconds);
    return kept.every(Boolean);
  }

  async checkServer(serverId: string, ttlSeconds: number): Promise<RegistryCheck> {
    const shards = await this.#shards();
    const kept = await this.#extendMarks(serverId, shards, ttlSeconds);
    const known = this.#masters.get(serverId);
    const lost = shards.filter((shard, i) => {
      if (!kept[i]) return true;
      // A replica that took over may lack the writes its master acknowledged last: the mark,
      // written long before, survived, but entries registered just before the failover may not.
      const before = known?.get(shard.firstSlot);
      return before !== undefined && before !== shard.masterId;
    });
    const observed: Observed = {
      lost: lost.length > 0,
      shards,
      lostShards: lost.map((s) => `slots ${s.ranges.map(([a, b]) => `${a}-${b}`).join(',')}`),
      affects: (deviceId) => {
        const slot = keySlot(this.#keys.device(deviceId));
        return lost.some((s) => shardHolds(s, slot));
      },
    };
    return observed;
  }

  async serversMarked(serverIds: readonly string[]): Promise<Set<string>> {
    if (serverIds.length === 0) return new Set();
    const shards = await this.#shards();
    const keys = serverIds.map((id) => this.#markKeys(id, shards));
    const replies = await sendAll(
      this.#redis,
      keys.flat().map((mark): BatchCall => ['exists', mark]),
    );
    const marked = new Set<string>();
    let i = 0;
    serverIds.forEach((id, s) => {
      const n = keys[s]?.length ?? 0;
      if (replies.slice(i, i + n).every((r) => r === 1)) marked.add(id);
      i += n;
    });
    return marked;
  }

  async restore(records: readonly DeviceRecord[], ttlSeconds: number): Promise<number> {
    if (records.length === 0) return 0;
    const byServer = new Map<string, string[]>();
    const byUser = new Map<string, string[]>();
    for (const r of records) {
      byServer.set(r.serverId, [...(byServer.get(r.serverId) ?? []), r.deviceId]);
      byUser.set(r.userId, [...(byUser.get(r.userId) ?? []), r.deviceId]);
    }
    // A device that turns out to belong to another connection is added to the sets too; the sets
    // are indexes checked against the records before anything is done with a member.
    const replies = await sendAll(this.#redis, [
      ...records.map((r): BatchCall => [
        'pushlineRestore',
        this.#keys.device(r.deviceId),
        r.serverId,
        r.serverUrl,
        r.connectionId,
        r.userId,
        r.tenantId ?? '',
        r.connectedAt,
        r.lastSeen,
        ttlSeconds,
      ]),
      ...[...byServer].map(([id, devices]): BatchCall => [
        'pushlineIndexAdd',
        this.#keys.server(id),
        ttlSeconds,
        ...devices,
      ]),
      ...[...byUser].map(([id, devices]): BatchCall => [
        'pushlineIndexAdd',
        this.#keys.user(id),
        ttlSeconds,
        ...devices,
      ]),
    ]);
    return replies.slice(0, records.length).filter((r) => r === 1).length;
  }

  async reportLoad(load: ServerLoad, ttlSeconds: number): Promise<void> {
    await this.#redis
      .multi()
      .set(this.#keys.load(load.serverId), JSON.stringify(load), 'EX', ttlSeconds)
      .sadd(this.#keys.servers, load.serverId)
      .exec();
  }

  async removeLoad(serverId: string): Promise<void> {
    await this.#redis.multi().del(this.#keys.load(serverId)).srem(this.#keys.servers, serverId).exec();
  }

  async liveServers(): Promise<ServerLoad[]> {
    const ids = await this.#redis.smembers(this.#keys.servers);
    if (ids.length === 0) return [];
    const values = await this.#redis.mget(ids.map((id) => this.#keys.load(id)));
    const live: ServerLoad[] = [];
    const gone: string[] = [];
    values.forEach((value, i) => {
      if (value) live.push(JSON.parse(value) as ServerLoad);
      else if (ids[i] !== undefined) gone.push(ids[i]);
    });
    if (gone.length > 0) await this.#redis.srem(this.#keys.servers, ...gone);
    return live;
  }

  /** The shards now: CLUSTER SLOTS on a cluster, one shard on one Redis. */
  async #shards(): Promise<RedisShard[]> {
    if (!isCluster(this.#redis)) return [SINGLE_SHARD];
    return shardsFromSlots(await this.#redis.cluster('SLOTS'));
  }

  #markKeys(serverId: string, shards: readonly RedisShard[]): string[] {
    return slotTags(shards.map((s) => s.firstSlot)).map((tag) => this.#keys.mark(serverId, tag));
  }

  /** EXPIREs the server's mark on every shard; true where it was there. */
  async #extendMarks(
    serverId: string,
    shards: readonly RedisShard[],
    ttlSeconds: number,
  ): Promise<boolean[]> {
    const replies = await sendAll(
      this.#redis,
      this.#markKeys(serverId, shards).map((mark): BatchCall => ['expire', mark, ttlSeconds]),
    );
    return replies.map((r) => r === 1);
  }
}

function fromFields(deviceId: string, fields: readonly (string | null)[] | null): DeviceRecord | null {
  if (!fields) return null;
  const [s, u, c, uid, tid, ca, ls] = fields;
  if (!s || !u || !c || !uid) return null;
  return {
    deviceId,
    userId: uid,
    tenantId: tid ?? undefined,
    serverId: s,
    serverUrl: u,
    connectionId: c,
    connectedAt: Number(ca ?? 0),
    lastSeen: Number(ls ?? 0),
  };
}
