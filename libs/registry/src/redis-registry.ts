import type { Redis } from 'ioredis';
import type { DeviceRecord, DeviceRegistry, RefreshEntry, RegistryRecovery, ServerLoad } from './types.ts';

/*
 * Key layout (P = key prefix):
 *   P dev:<deviceId>    hash  s=serverId u=serverUrl c=connectionId uid tid ca=connectedAt ls=lastSeen   (TTL)
 *   P user:<userId>     set   deviceIds, pruned lazily when a member's record is gone or moved   (TTL)
 *   P srv:<serverId>    set   deviceIds registered through that server, for clearing after a crash   (TTL)
 *   P load:<serverId>   string JSON ServerLoad   (TTL)
 *   P servers           set   serverIds that have reported load
 *   P mark:<serverId>   string "1": this Redis holds the server's entries; gone = Redis lost them   (TTL)
 * The scripts touch a device's, its user's and its server's keys together; on Redis Cluster they
 * need hash tags (docs/decisions/0006-registry.md).
 */

const REGISTER = `
local prev = redis.call('HMGET', KEYS[1], 's', 'u', 'c', 'uid', 'tid', 'ca', 'ls')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 's', ARGV[1], 'u', ARGV[2], 'c', ARGV[3], 'uid', ARGV[4], 'ca', ARGV[6], 'ls', ARGV[6])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'tid', ARGV[5]) end
redis.call('EXPIRE', KEYS[1], ARGV[7])
for i = 2, 3 do
  redis.call('SADD', KEYS[i], ARGV[8])
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[7]) then redis.call('EXPIRE', KEYS[i], ARGV[7]) end
end
return prev
`;

// Compare-and-delete: a device that already reconnected elsewhere keeps its new entry.
const UNREGISTER = `
local owner = redis.call('HMGET', KEYS[1], 'c', 's')
if owner[1] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return 1
end
if owner[2] ~= ARGV[3] then redis.call('SREM', KEYS[3], ARGV[2]) end
return 0
`;

// KEYS[2..] are index sets (user, server) whose TTL must not fall behind the record's; only
// lengthened, never shortened, since other devices' records may need them longer.
const REFRESH = `
if redis.call('HGET', KEYS[1], 'c') == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[1], 'ls', ARGV[3])
  for i = 2, #KEYS do
    if redis.call('TTL', KEYS[i]) < tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[i], ARGV[2]) end
  end
  return 1
end
return 0
`;

// Puts back a live connection's entry after Redis lost it, never over another connection's entry
// (the device may have moved meanwhile). 1 = written (it was missing), 2 = already ours, 0 = another's.
// The server's device set is written once per pipeline by the caller, not per device: a restore
// writes thousands of entries at once, and each call in a script costs Redis a few microseconds.
const RESTORE = `
local owner = redis.call('HGET', KEYS[1], 'c')
if owner and owner ~= ARGV[3] then return 0 end
if not owner then
  if ARGV[5] ~= '' then
    redis.call('HSET', KEYS[1], 's', ARGV[1], 'u', ARGV[2], 'c', ARGV[3], 'uid', ARGV[4], 'ca', ARGV[6], 'ls', ARGV[7], 'tid', ARGV[5])
  else
    redis.call('HSET', KEYS[1], 's', ARGV[1], 'u', ARGV[2], 'c', ARGV[3], 'uid', ARGV[4], 'ca', ARGV[6], 'ls', ARGV[7])
  end
  redis.call('EXPIRE', KEYS[1], ARGV[8])
end
redis.call('SADD', KEYS[2], ARGV[9])
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[8]) then redis.call('EXPIRE', KEYS[2], ARGV[8]) end
if owner then return 2 end
return 1
`;

const CLEAR_ONE = `
if redis.call('HGET', KEYS[1], 's') == ARGV[1] then
  local uid = redis.call('HGET', KEYS[1], 'uid')
  redis.call('DEL', KEYS[1])
  if uid then redis.call('SREM', ARGV[3] .. uid, ARGV[2]) end
  return 1
end
return 0
`;

type RegistryRedis = Redis & {
  pushlineRegister(...args: (string | number)[]): Promise<(string | null)[]>;
  pushlineUnregister(...args: (string | number)[]): Promise<number>;
  pushlineRefresh(...args: (string | number)[]): Promise<number>;
  pushlineClearOne(...args: (string | number)[]): Promise<number>;
  pushlineRestore(...args: (string | number)[]): Promise<number>;
};

type RegistryPipeline = ReturnType<Redis['pipeline']> & {
  pushlineRefresh(...args: (string | number)[]): unknown;
  pushlineClearOne(...args: (string | number)[]): unknown;
  pushlineRestore(...args: (string | number)[]): unknown;
};

export interface RedisDeviceRegistryOptions {
  /** A connected ioredis client; the registry does not own it and never closes it. */
  readonly redis: Redis;
  /** Prefix of every key, e.g. `pushline:`. */
  readonly keyPrefix: string;
}

export class RedisDeviceRegistry implements DeviceRegistry, RegistryRecovery {
  readonly #redis: RegistryRedis;
  readonly #p: string;

  constructor(options: RedisDeviceRegistryOptions) {
    const redis = options.redis;
    if (!('pushlineRegister' in redis)) {
      redis.defineCommand('pushlineRegister', { numberOfKeys: 3, lua: REGISTER });
      redis.defineCommand('pushlineUnregister', { numberOfKeys: 3, lua: UNREGISTER });
      // Variable key count: the caller passes numkeys first.
      redis.defineCommand('pushlineRefresh', { lua: REFRESH });
      redis.defineCommand('pushlineClearOne', { numberOfKeys: 1, lua: CLEAR_ONE });
    }
    if (!('pushlineRestore' in redis)) {
      redis.defineCommand('pushlineRestore', { numberOfKeys: 2, lua: RESTORE });
    }
    this.#redis = redis as RegistryRedis;
    this.#p = options.keyPrefix;
  }

  #dev(id: string) {
    return `${this.#p}dev:${id}`;
  }
  #user(id: string) {
    return `${this.#p}user:${id}`;
  }
  #srv(id: string) {
    return `${this.#p}srv:${id}`;
  }
  #mark(serverId: string) {
    return `${this.#p}mark:${serverId}`;
  }

  async register(record: DeviceRecord, ttlSeconds: number): Promise<DeviceRecord | null> {
    const prev = await this.#redis.pushlineRegister(
      this.#dev(record.deviceId),
      this.#user(record.userId),
      this.#srv(record.serverId),
      record.serverId,
      record.serverUrl,
      record.connectionId,
      record.userId,
      record.tenantId ?? '',
      record.connectedAt,
      ttlSeconds,
      record.deviceId,
    );
    return fromFields(record.deviceId, prev);
  }

  async unregister(deviceId: string, connectionId: string): Promise<boolean> {
    const current = await this.#redis.hmget(this.#dev(deviceId), 'uid', 's');
    const [userId, serverId] = current;
    if (!userId || !serverId) return false;
    const removed = await this.#redis.pushlineUnregister(
      this.#dev(deviceId),
      this.#user(userId),
      this.#srv(serverId),
      connectionId,
      deviceId,
      serverId,
    );
    return removed === 1;
  }

  async lookup(deviceId: string): Promise<DeviceRecord | null> {
    const fields = await this.#redis.hmget(this.#dev(deviceId), 's', 'u', 'c', 'uid', 'tid', 'ca', 'ls');
    return fromFields(deviceId, fields);
  }

  async lookupMany(deviceIds: readonly string[]): Promise<(DeviceRecord | null)[]> {
    if (deviceIds.length === 0) return [];
    const pipeline = this.#redis.pipeline();
    for (const id of deviceIds) pipeline.hmget(this.#dev(id), 's', 'u', 'c', 'uid', 'tid', 'ca', 'ls');
    const results = (await pipeline.exec()) ?? [];
    return deviceIds.map((id, i) => {
      const [err, fields] = results[i] ?? [null, null];
      if (err) throw err;
      return fromFields(id, fields as (string | null)[] | null);
    });
  }

  async userDevices(userId: string): Promise<DeviceRecord[]> {
    const ids = await this.#redis.smembers(this.#user(userId));
    const records = await this.lookupMany(ids);
    const live: DeviceRecord[] = [];
    const stale: string[] = [];
    records.forEach((record, i) => {
      if (record && record.userId === userId) live.push(record);
      else if (ids[i] !== undefined) stale.push(ids[i]);
    });
    if (stale.length > 0) await this.#redis.srem(this.#user(userId), ...stale);
    return live;
  }

  async refresh(entries: readonly RefreshEntry[], ttlSeconds: number): Promise<number> {
    if (entries.length === 0) return 0;
    const now = Date.now();
    const pipeline = this.#redis.pipeline() as RegistryPipeline;
    for (const e of entries) {
      const keys = [this.#dev(e.deviceId)];
      if (e.userId !== undefined) keys.push(this.#user(e.userId));
      if (e.serverId !== undefined) keys.push(this.#srv(e.serverId));
      pipeline.pushlineRefresh(keys.length, ...keys, e.connectionId, ttlSeconds, now);
    }
    const results = (await pipeline.exec()) ?? [];
    let refreshed = 0;
    for (const [err, value] of results) {
      if (err) throw err;
      if (value === 1) refreshed++;
    }
    return refreshed;
  }

  async clearServer(serverId: string): Promise<number> {
    const key = this.#srv(serverId);
    let cleared = 0;
    let cursor = '0';
    do {
      const [next, ids] = await this.#redis.sscan(key, cursor, 'COUNT', 500);
      cursor = next;
      if (ids.length === 0) continue;
      const pipeline = this.#redis.pipeline() as RegistryPipeline;
      for (const id of ids) pipeline.pushlineClearOne(this.#dev(id), serverId, id, `${this.#p}user:`);
      for (const [err, value] of (await pipeline.exec()) ?? []) {
        if (err) throw err;
        if (value === 1) cleared++;
      }
    } while (cursor !== '0');
    await this.#redis.del(key, this.#mark(serverId));
    return cleared;
  }

  async markServer(serverId: string, ttlSeconds: number): Promise<void> {
    await this.#redis.set(this.#mark(serverId), '1', 'EX', ttlSeconds);
  }

  async checkServerMark(serverId: string, ttlSeconds: number): Promise<boolean> {
    return (await this.#redis.expire(this.#mark(serverId), ttlSeconds)) === 1;
  }

  async restore(records: readonly DeviceRecord[], ttlSeconds: number): Promise<number> {
    if (records.length === 0) return 0;
    const pipeline = this.#redis.pipeline() as RegistryPipeline;
    const byServer = new Map<string, string[]>();
    for (const r of records) {
      pipeline.pushlineRestore(
        this.#dev(r.deviceId),
        this.#user(r.userId),
        r.serverId,
        r.serverUrl,
        r.connectionId,
        r.userId,
        r.tenantId ?? '',
        r.connectedAt,
        r.lastSeen,
        ttlSeconds,
        r.deviceId,
      );
      const ids = byServer.get(r.serverId);
      if (ids) ids.push(r.deviceId);
      else byServer.set(r.serverId, [r.deviceId]);
    }
    // A device that turns out to belong to another connection is listed too; clearServer checks
    // ownership before it removes anything, so the extra member costs nothing but its bytes.
    for (const [serverId, ids] of byServer) {
      pipeline.sadd(this.#srv(serverId), ...ids);
      // Only lengthened, never shortened, like the scripts' TTL check: NX for a new set, GT otherwise.
      pipeline.expire(this.#srv(serverId), ttlSeconds, 'NX');
      pipeline.expire(this.#srv(serverId), ttlSeconds, 'GT');
    }
    const results = (await pipeline.exec()) ?? [];
    let written = 0;
    for (const [i, [err, value]] of results.entries()) {
      if (err) throw err;
      if (i < records.length && value === 1) written++;
    }
    return written;
  }

  async reportLoad(load: ServerLoad, ttlSeconds: number): Promise<void> {
    await this.#redis
      .multi()
      .set(`${this.#p}load:${load.serverId}`, JSON.stringify(load), 'EX', ttlSeconds)
      .sadd(`${this.#p}servers`, load.serverId)
      .exec();
  }

  async removeLoad(serverId: string): Promise<void> {
    await this.#redis.multi().del(`${this.#p}load:${serverId}`).srem(`${this.#p}servers`, serverId).exec();
  }

  async liveServers(): Promise<ServerLoad[]> {
    const ids = await this.#redis.smembers(`${this.#p}servers`);
    if (ids.length === 0) return [];
    const values = await this.#redis.mget(ids.map((id) => `${this.#p}load:${id}`));
    const live: ServerLoad[] = [];
    const gone: string[] = [];
    values.forEach((value, i) => {
      if (value) live.push(JSON.parse(value) as ServerLoad);
      else if (ids[i] !== undefined) gone.push(ids[i]);
    });
    if (gone.length > 0) await this.#redis.srem(`${this.#p}servers`, ...gone);
    return live;
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
