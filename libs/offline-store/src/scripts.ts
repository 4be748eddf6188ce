/*
 * Lua scripts of the offline store. Each one is a claim: a message leaves a structure in the same
 * script that decides what happens to it, so when a drain, the sweeper and an eviction race for
 * the same message exactly one of them wins and only the winner records its outcome.
 *
 * Keys (P = key prefix, d = device id, member = `<d>|<requestId>`):
 *   P offline:q:<d>    zset  requestId → seq       queued, oldest first
 *   P offline:f:<d>    zset  requestId → seq       leased to a drain (in flight), keeps its seq
 *   P offline:m:<d>    hash  requestId → StoredMessage JSON (queued and leased)
 *   P offline:lock:<d> string drain token         one drain per device at a time, so order holds
 *   P offline:due      zset  member → expiresAt    every stored message, for the sweeper
 *   P offline:leases   zset  member → deadline     leased messages, returned to the queue when a drain dies
 *   P offline:seq      string counter              enqueue order
 * The per-device keys vanish by themselves when emptied (Redis deletes empty zsets and hashes).
 */

/**
 * KEYS q f m due seq; ARGV requestId json expiresAt maxPerDevice member.
 * Returns {1, evictedJson...} when stored, {0} when the request was already stored.
 */
export const STORE = `
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 then return {0} end
local seq = redis.call('INCR', KEYS[5])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[5])
local out = {1}
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
local memberPrefix = string.sub(ARGV[5], 1, #ARGV[5] - #ARGV[1])
while excess > 0 do
  local oldest = redis.call('ZPOPMIN', KEYS[1])
  if #oldest == 0 then break end
  local id = oldest[1]
  local json = redis.call('HGET', KEYS[3], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], memberPrefix .. id)
  if json then out[#out + 1] = json end
  excess = excess - 1
end
return out
`;

/**
 * KEYS q lock; ARGV token leaseMs. Starts a drain. Returns 0 when nothing is queued and no other
 * drain runs: there is nothing to do and the lock is not taken, which makes a connect of a device
 * with an empty inbox one round trip. Returns 1 when the caller holds the lock (taken now, or
 * extended because it already held it), 2 when another drain holds it (it may be delivering the
 * device's last message, which comes back to the queue if the delivery fails).
 */
export const BEGIN = `
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
export const UNLOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * KEYS q f m leases lock; ARGV memberPrefix leaseDeadline token leaseMs.
 * Moves the oldest queued message to the in-flight set under a lease. Returns {requestId, json}
 * ({requestId, false} if its body is missing), or -1 when the caller lost the drain lock (its
 * lease ran out while it was slow). When the queue is empty it releases the lock in the same step
 * and returns false: a message stored before it was seen here, and a drain started after it finds
 * the lock free. Nothing can slip in between the last look and the unlock.
 */
export const LEASE = `
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
 * KEYS f m due leases; ARGV requestId member. Ends a leased message (its outcome is about to be
 * recorded). Returns 1 for the caller that still held the lease, 0 if the sweeper took it back.
 */
export const FINISH = `
if redis.call('ZREM', KEYS[4], ARGV[2]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
`;

/**
 * KEYS q f m leases; ARGV requestId member json. Puts a leased message back at its place in the
 * queue (the head, as it was the oldest) with its updated body. Returns 1, or 0 if the lease was
 * already taken back.
 */
export const RELEASE = `
if redis.call('ZREM', KEYS[4], ARGV[2]) == 0 then return 0 end
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0'
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
return 1
`;

/**
 * KEYS q f leases; ARGV requestId member now. The sweeper's recovery of a lease whose drain died:
 * back to the queue at its old place. Returns 1 when it was taken back.
 */
export const RECLAIM = `
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[2])
if not deadline or tonumber(deadline) > tonumber(ARGV[3]) then return 0 end
redis.call('ZREM', KEYS[3], ARGV[2])
local seq = redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0'
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
return 1
`;

/**
 * KEYS q f m due; ARGV requestId member now. The sweeper's claim of an expired queued message.
 * Returns its JSON when claimed; false when it is not due, leased (a drain decides), or gone.
 */
export const CLAIM_EXPIRED = `
local expiresAt = redis.call('ZSCORE', KEYS[4], ARGV[2])
if not expiresAt or tonumber(expiresAt) > tonumber(ARGV[3]) then return false end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then redis.call('ZREM', KEYS[4], ARGV[2]) end
  return false
end
local json = redis.call('HGET', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[2])
return json
`;

/** KEYS q f; the device's stored messages, queued plus in flight. */
export const PENDING = `
return redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
`;
