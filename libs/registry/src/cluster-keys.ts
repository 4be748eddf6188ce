import calculateSlot from 'cluster-key-slot';

/** Hash slots of a Redis Cluster. */
export const CLUSTER_SLOTS = 16_384;

/** The cluster hash slot of a key: CRC16 of its hash tag (`{...}`) if it has one, of the whole key otherwise. */
export function keySlot(key: string): number {
  return calculateSlot(key);
}

/** The common slot of `keys`, or -1 when they do not share one. */
export function commonSlot(keys: readonly string[]): number {
  return keys.length === 0 ? -1 : calculateSlot.generateMulti(keys);
}

/** slot → the shortest tag found for it, filled on demand and kept (tags never change). */
const tagBySlot = new Map<number, string>();
/** Candidates tried so far: tags are the base-36 numbers in order, so each slot's tag is fixed. */
let nextCandidate = 0;

/**
 * Hash tags (the text between braces) whose slots are `slots`: `{<tag>}` in a key puts it on that
 * slot. Each is the first base-36 number, counting from 0, that hashes there, so a slot's tag is
 * the same in every process and release: it is part of the key layout.
 */
export function slotTags(slots: readonly number[]): string[] {
  for (const slot of slots) {
    if (!Number.isInteger(slot) || slot < 0 || slot >= CLUSTER_SLOTS) throw new RangeError(`no slot ${slot}`);
  }
  const wanted = new Set(slots.filter((s) => !tagBySlot.has(s)));
  while (wanted.size > 0) {
    const candidate = (nextCandidate++).toString(36);
    const slot = calculateSlot(candidate);
    if (tagBySlot.has(slot)) continue;
    tagBySlot.set(slot, candidate);
    wanted.delete(slot);
  }
  return slots.map((s) => tagBySlot.get(s) as string);
}

/**
 * Tags of `count` partitions spread evenly over the slots: partition k sits in the middle of the
 * k-th of `count` equal slot ranges. Masters own contiguous, near-equal slot ranges (what
 * `redis-cli --cluster create` and rebalance produce), so the partitions spread over them as
 * evenly as `count` allows, instead of where CRC16 happens to put `p0`, `p1`, ... (a skew
 * Centrifugo measured, centrifuge#554).
 */
export function spreadTags(count: number): string[] {
  if (!Number.isInteger(count) || count < 1 || count > CLUSTER_SLOTS) {
    throw new RangeError(`partitions must be 1 to ${CLUSTER_SLOTS}, not ${count}`);
  }
  return slotTags(
    Array.from({ length: count }, (_, k) => Math.floor(((2 * k + 1) * CLUSTER_SLOTS) / (2 * count))),
  );
}

/** A master and the slots it serves: the unit a failover or a restart loses writes of. */
export interface RedisShard {
  /** Its lowest slot: the shard's name, which stays when a replica takes over. */
  readonly firstSlot: number;
  /** Node id of its master now ('' on one Redis, which has no node ids). */
  readonly masterId: string;
  /** Slot ranges it serves, inclusive. */
  readonly ranges: readonly (readonly [number, number])[];
}

type SlotsReply = [
  start: number,
  end: number,
  ...nodes: [host: string, port: number, id?: string, ...rest: unknown[]][],
][];

/** Whether `slot` falls in the shard's ranges. */
export function shardHolds(shard: RedisShard, slot: number): boolean {
  return shard.ranges.some(([from, to]) => slot >= from && slot <= to);
}

/**
 * The shards as CLUSTER SLOTS answers now (from whichever node the client asks), grouped by
 * master; one Redis is one shard of every slot.
 */
export function shardsFromSlots(reply: SlotsReply): RedisShard[] {
  const byMaster = new Map<string, [number, number][]>();
  for (const [start, end, master] of reply) {
    const id = master?.[2] ?? `${master?.[0]}:${master?.[1]}`;
    const ranges = byMaster.get(id) ?? [];
    ranges.push([start, end]);
    byMaster.set(id, ranges);
  }
  return [...byMaster]
    .map(([masterId, ranges]) => {
      ranges.sort((a, b) => a[0] - b[0]);
      return { firstSlot: ranges[0]?.[0] ?? 0, masterId, ranges };
    })
    .sort((a, b) => a.firstSlot - b.firstSlot);
}

export const SINGLE_SHARD: RedisShard = { firstSlot: 0, masterId: '', ranges: [[0, CLUSTER_SLOTS - 1]] };
