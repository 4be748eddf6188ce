/*
 * Lua scripts of the offline store. Each one is a claim: a message leaves a structure in the same
 * script that decides what happens to it, so when a drain, the sweeper and an eviction race for
 * the same message exactly one of them wins, and only the winner records its outcome. The outcome
 * is written to the outbox stream in that same script (a transactional outbox): the state change
 * and its event are never apart, and the relay publishes the event to Kafka later.
 *
 * Keys (P = key prefix, t = the hash tag of the device's partition, d = device id, f = the
 * message's field, member = `<d>|<f>`):
 *   P offline:{t}:q:<d>          zset  f → seq            queued, oldest first
 *   P offline:{t}:f:<d>          zset  f → seq            leased to a drain (in flight), keeps its seq
 *   P offline:{t}:m:<d>          hash  f → StoredMessage JSON (queued and leased)
 *   P offline:{t}:lock:<d>       string drain token       one drain per device at a time, so order holds
 *   P offline:{t}:due            zset  member → expiresAt the partition's stored messages, for the sweeper
 *   P offline:{t}:leases         zset  member → deadline  leased messages, returned to the queue when a drain dies
 *   P offline:{t}:seq            string counter           enqueue order
 *   P offline:{t}:outbox         stream                   terminal outcomes waiting for the relay
 *   P offline:{t}:usage:<origin> hash  n, b               stored messages and their JSON bytes per origin
 * A partition is one hash tag, so every key a script touches (the device's, its partition's
 * sweep sets and outbox, and the usage hashes) is on one slot of a Redis Cluster; partitions are
 * spread evenly over the slots, and the sweeper and the relays walk all of them. One Redis has one
 * partition. The field is `<origin>/<requestId>` for a message with an origin (the API key that
 * sent it) and the bare request id otherwise: request ids are deduplicated per origin, so no
 * sender can suppress another's message by reusing its id. Ids never hold `/`, `|` or braces.
 * The per-device keys vanish by themselves when emptied (Redis deletes empty zsets and hashes).
 * The usage key is derived inside the scripts from the field (an eviction can free another
 * origin's usage); it shares the partition's tag, so it is on the same slot.
 *
 * Outbox entry fields: d device id, o outcome, r reason ('' for none), a attempts ('' to take
 * the message's own), t time of the outcome (ms), m the StoredMessage JSON.
 */

/** Shared by the scripts that remove or rewrite a stored message: keeps the origin's usage exact. */
const USAGE = `
local function usage_key(prefix, field)
  local origin = string.match(field, '^(.-)/')
  if origin == nil or origin == '' then return nil end
  return prefix .. origin
end
local function add_usage(prefix, field, count, bytes)
  local key = usage_key(prefix, field)
  if key == nil then return end
  local n = redis.call('HINCRBY', key, 'n', count)
  redis.call('HINCRBY', key, 'b', bytes)
  if n <= 0 then redis.call('DEL', key) end
end
`;

/**
 * KEYS q f m due seq outbox; ARGV field json expiresAt maxPerDevice member usagePrefix
 * maxMessages maxBytes deviceId now. maxMessages and maxBytes bound the origin's usage (0: no
 * bound). Returns {1, evictedCount} when stored, {0} when the field was already stored, {-1} when
 * the origin's quota would be exceeded (nothing changed). Evicted messages are recorded expired
 * (reason evicted) in the outbox.
 */
const STORE = `${USAGE}
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {0} end
local ukey = usage_key(ARGV[6], ARGV[1])
if ukey ~= nil then
  local used = redis.call('HMGET', ukey, 'n', 'b')
  local n = tonumber(used[1] or '0') or 0
  local b = tonumber(used[2] or '0') or 0
  local maxN = tonumber(ARGV[7])
  local maxB = tonumber(ARGV[8])
  if (maxN > 0 and n + 1 > maxN) or (maxB > 0 and b + #ARGV[2] > maxB) then return {-1} end
end
local seq = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
add_usage(ARGV[6], ARGV[1], 1, #ARGV[2])
local evicted = 0
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
local memberPrefix = ARGV[9] .. '|'
while excess > 0 do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  if #oldest == 0 then break end
  local id = oldest[1]
  local json = redis.call('HGET', KEYS[3], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], memberPrefix .. id)
  if json then
    add_usage(ARGV[6], id, -1, -#json)
    redis.call('XADD', KEYS[6], '*', 'd', ARGV[9], 'o', 'expired', 'r', 'evicted', 'a', '', 't', ARGV[10], 'm', json)
    evicted = evicted + 1
  end
  excess = excess - 1
end
return {1, evicted}
`;

/**
 * KEYS q lock; ARGV token leaseMs. Starts a drain. Returns 0 when nothing is queued and no other
 * drain runs: there is nothing to do and the lock is not taken, which makes a connect of a device
 * with an empty inbox one round trip. Returns 1 when the caller holds the lock (taken now, or
 * extended because it already held it), 2 when another drain holds it (it may be delivering the
 * device's last message, which comes back to the queue if the delivery fails).
 */
const BEGIN = `
local holder = redis.call('GET', KEYS[2])
if holder == false then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 2
`;

/** KEYS lock; ARGV token. Releases the lock only if the caller still holds it. */
const UNLOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * KEYS q f m leases lock; ARGV memberPrefix leaseDeadline token leaseMs.
 * Moves the oldest queued message to the in-flight set under a lease. Returns {field, json}
 * ({field, false} if its body is missing), or -1 when the caller lost the drain lock (its lease
 * ran out while it was slow). When the queue is empty it releases the lock in the same step and
 * returns false: a message stored before it was seen here, and a drain started after it finds
 * the lock free. Nothing can slip in between the last look and the unlock.
 */
const LEASE = `
if redis.call('GET', KEYS[5]) ~= ARGV[3] then return -1 end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then
  redis.call('DEL', KEYS[5])
  return false
end
redis.call('PEXPIRE', KEYS[5], ARGV[4])
local id = head[1]
redis.call('ZREM', KEYS[1], id)
redis.call('ZADD', KEYS[2], head[2], id)
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1] .. id)
return {id, redis.call('HGET', KEYS[3], id)}
`;

/**
 * KEYS f m due leases outbox; ARGV field member usagePrefix deviceId outcome reason attempts now.
 * Ends a leased message and, unless outcome is '', records it in the outbox. Returns 1 for the
 * caller that still held the lease, 0 if the sweeper took it back.
 */
const FINISH = `${USAGE}
if redis.call('ZREM', KEYS[4], ARGV[2]) == 0 then return 0 end
local json = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
if json then
  add_usage(ARGV[3], ARGV[1], -1, -#json)
  if ARGV[5] ~= '' then
    redis.call('XADD', KEYS[5], '*', 'd', ARGV[4], 'o', ARGV[5], 'r', ARGV[6], 'a', ARGV[7], 't', ARGV[8], 'm', json)
  end
end
return 1
`;

/**
 * KEYS q f m leases; ARGV field member json usagePrefix. Puts a leased message back at its place
 * in the queue (the head, as it was the oldest) with its updated body. Returns 1, or 0 if the
 * lease was already taken back.
 */
const RELEASE = `${USAGE}
if redis.call('ZREM', KEYS[4], ARGV[2]) == 0 then return 0 end
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0'
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
if ARGV[3] ~= '' then
  local old = redis.call('HGET', KEYS[3], ARGV[1])
  if old then add_usage(ARGV[4], ARGV[1], 0, #ARGV[3] - #old) end
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
end
return 1
`;

/**
 * KEYS q f leases; ARGV field member now. The sweeper's recovery of a lease whose drain died:
 * back to the queue at its old place. Returns 1 when it was taken back.
 */
const RECLAIM = `
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[2])
if not deadline or tonumber(deadline) > tonumber(ARGV[3]) then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0'
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
return 1
`;

/**
 * KEYS q f m due outbox; ARGV field member now usagePrefix deviceId. The sweeper's claim of an
 * expired queued message, recorded expired (reason ttl_elapsed) in the outbox. Returns 1 when
 * claimed; 0 when it is not due, leased (a drain decides), or gone.
 */
const CLAIM_EXPIRED = `${USAGE}
local expiresAt = redis.call('ZSCORE', KEYS[4], ARGV[2])
if not expiresAt or tonumber(expiresAt) > tonumber(ARGV[3]) then return 0 end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then redis.call('ZREM', KEYS[4], ARGV[2]) end
  return 0
end
local json = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[2])
if not json then return 0 end
add_usage(ARGV[4], ARGV[1], -1, -#json)
redis.call('XADD', KEYS[5], '*', 'd', ARGV[5], 'o', 'expired', 'r', 'ttl_elapsed', 'a', '', 't', ARGV[3], 'm', json)
return 1
`;

/** KEYS q₁ f₁ q₂ f₂ …; each device's stored messages, queued plus in flight, one count per device. */
const PENDING = `
local counts = {}
for i = 1, #KEYS, 2 do
  counts[#counts + 1] = redis.call('ZCARD', KEYS[i]) + redis.call('ZCARD', KEYS[i + 1])
end
return counts
`;

/**
 * Every script the store sends, with the number of keys each takes (for the slot test); the pending
 * count is defined a second time for calls of many devices on one Redis (`GroupedScript`).
 */
export const OFFLINE_SCRIPTS = {
  pushlineOfflineStore: { numberOfKeys: 6, lua: STORE },
  pushlineOfflineBegin: { numberOfKeys: 2, lua: BEGIN },
  pushlineOfflineUnlock: { numberOfKeys: 1, lua: UNLOCK },
  pushlineOfflineLease: { numberOfKeys: 5, lua: LEASE },
  pushlineOfflineFinish: { numberOfKeys: 5, lua: FINISH },
  pushlineOfflineRelease: { numberOfKeys: 4, lua: RELEASE },
  pushlineOfflineReclaim: { numberOfKeys: 3, lua: RECLAIM },
  pushlineOfflineClaimExpired: { numberOfKeys: 5, lua: CLAIM_EXPIRED },
  pushlineOfflinePending: { numberOfKeys: 2, lua: PENDING },
  pushlineOfflinePendingMany: { lua: PENDING },
} as const;
