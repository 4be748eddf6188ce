import { randomUUID } from 'node:crypto';
import {
  isCluster,
  keySlot,
  sendAll,
  sendGrouped,
  spreadTags,
  type BatchCall,
  type RedisClient,
} from '@pushline/registry';
import { StoredMessage, type DeliverResult, type DeliveryOutcome } from '@pushline/protocol';
import {
  Registry,
  publishToAckHistogram,
  stageCounter,
  type Counter,
  type Histogram,
  type LabelValues,
  type Logger,
} from '@pushline/telemetry';
import { OFFLINE_SCRIPTS } from './scripts.ts';

/**
 * Most devices one pending count takes on one Redis (`sendGrouped`): 256 ran 0.31 ms in Redis on
 * the 2-core bench machine (`INFO commandstats`).
 */
const DEVICES_PER_PENDING_CALL = 256;

/**
 * The store's key names under `prefix` with `partitions` partitions (see scripts.ts): a device's
 * keys and its partition's sweep sets, outbox and usage hashes share the partition's hash tag.
 */
export function offlineKeys(prefix: string, partitions: number) {
  const tags = spreadTags(partitions);
  const base = (partition: number) => `${prefix}offline:{${tags[partition] as string}}:`;
  const partitionOf = (deviceId: string) => (partitions === 1 ? 0 : keySlot(deviceId) % partitions);
  const device = (kind: string) => (deviceId: string) => `${base(partitionOf(deviceId))}${kind}:${deviceId}`;
  return {
    partitions,
    partitionOf,
    queue: device('q'),
    inflight: device('f'),
    messages: device('m'),
    lock: device('lock'),
    due: (partition: number) => `${base(partition)}due`,
    leases: (partition: number) => `${base(partition)}leases`,
    seq: (partition: number) => `${base(partition)}seq`,
    outbox: (partition: number) => `${base(partition)}outbox`,
    usagePrefix: (partition: number) => `${base(partition)}usage:`,
  };
}

export type OfflineKeys = ReturnType<typeof offlineKeys>;

/**
 * Partitions of the offline store on this client: `configured` on a Redis Cluster (the same in
 * every service), one on a single Redis, where partitions would only cost.
 */
export function offlinePartitions(redis: RedisClient, configured: number | undefined): number {
  return isCluster(redis) ? (configured ?? DEFAULT_CLUSTER_PARTITIONS) : 1;
}

/** PUSHLINE_REDIS_OFFLINE_PARTITIONS's default. */
export const DEFAULT_CLUSTER_PARTITIONS = 64;

/** The inbox a connection server drains when a device connects; `RedisOfflineStore` implements it. */
export interface OfflineInbox {
  /** Delivers the device's stored messages oldest first through `deliver`, recording each outcome; resolves when the queue is empty. */
  drain(deviceId: string, deliver: (msg: StoredMessage) => Promise<DeliverResult>): Promise<void>;
}

export interface RedisOfflineStoreOptions {
  /** A connected ioredis client (one Redis or a cluster); the store does not own it and never closes it. */
  readonly redis: RedisClient;
  /** Prefix of every key, e.g. `pushline:`. */
  readonly keyPrefix: string;
  /**
   * Partitions on a Redis Cluster (PUSHLINE_REDIS_OFFLINE_PARTITIONS; every store and relay on
   * the same keys must agree). Ignored on a single Redis, which has one. Default 64.
   */
  readonly partitions?: number;
  /** Messages kept per device; storing past it evicts the oldest, which is recorded `expired` (reason `evicted`). */
  readonly maxPerDevice: number;
  /**
   * Bounds of what one origin (the API key a message came from) may have stored at once, over
   * all devices: messages, and bytes of their JSON. A store past either is refused
   * (`refused: 'quota_exceeded'`). Messages without an origin are not counted. With several
   * partitions each keeps its share (the bound divided by the partitions, rounded up), since the
   * count lives next to the messages it counts. Default: no bound.
   */
  readonly quota?: { readonly maxMessages: number; readonly maxBytes: number };
  /**
   * Called after a step that wrote terminal outcomes to the outbox (`OutboxRelay.kick`), so they
   * are published at once rather than at the relay's next poll.
   */
  readonly onOutbox?: () => void;
  readonly logger: Logger;
  /** Where the store's counters are registered. Default: none (not exported). */
  readonly metrics?: Registry;
  /**
   * How long a drain may hold a message (and the device's drain lock) before the sweeper hands it
   * back to the queue: must exceed one delivery's timeout. Default 30 000 ms.
   */
  readonly leaseMs?: number;
}

export interface DrainOptions {
  /**
   * When another drain of the same device is running: true waits for it to finish (up to the
   * lease) and then drains what is left; false returns at once, since the running drain empties
   * the queue, including what was stored after it started. Default true.
   */
  readonly waitForLock?: boolean;
}

export interface StoreResult {
  /** The message is in the store (now, or already from an earlier call with the same request id). */
  readonly stored: boolean;
  /** Older messages evicted to stay within `maxPerDevice`; each was recorded `expired`. */
  readonly evicted: number;
  /** The request id was already stored for this device by the same origin; nothing changed. */
  readonly duplicate?: boolean;
  /** Why the message was not stored: its origin reached its quota. Nothing changed. */
  readonly refused?: 'quota_exceeded';
}

type StoreRedis = RedisClient & {
  pushlineOfflineStore(...args: (string | number)[]): Promise<(number | string)[]>;
  pushlineOfflineBegin(...args: (string | number)[]): Promise<Begin>;
  pushlineOfflineUnlock(...args: (string | number)[]): Promise<number>;
  pushlineOfflineLease(...args: (string | number)[]): Promise<-1 | null | [string, string | null]>;
  pushlineOfflineFinish(...args: (string | number)[]): Promise<number>;
  pushlineOfflineRelease(...args: (string | number)[]): Promise<number>;
  pushlineOfflineReclaim(...args: (string | number)[]): Promise<number>;
  pushlineOfflineClaimExpired(...args: (string | number)[]): Promise<number>;
  pushlineOfflinePending(queueKey: string, inflightKey: string): Promise<number[]>;
};

interface StoreMetrics {
  stored: Counter;
  refused: Counter<'reason'>;
  expired: Counter<'reason'>;
  drained: Counter<'outcome'>;
  requeued: Counter<'reason'>;
  reclaimed: Counter;
  /** Accepted → device ack of drained messages (`source="offline"`), on the registry of the service that drains. */
  publishToAck: Histogram<'source'> | undefined;
}

/** What the BEGIN script found: nothing queued (and no drain running), the lock is ours, another drain holds it. */
type Begin = 0 | 1 | 2;
const NOTHING_QUEUED = 0;
const LOCKED = 1;

/** Outcomes that end a stored message; anything else puts it back for the next drain. */
const TERMINAL_ON_DRAIN = new Set<DeliverResult['outcome']>(['delivered', 'rejected']);

/**
 * Store-and-forward for offline devices in Redis: per-device queues bounded to `maxPerDevice`,
 * drained in order when the device connects, expired by `sweepExpired` when their ttl passes.
 * Every stored message ends in exactly one terminal outcome, written to the outbox stream in the
 * same Redis step that ends it; an `OutboxRelay` publishes the outbox to Kafka.
 */
export class RedisOfflineStore implements OfflineInbox {
  readonly #redis: StoreRedis;
  readonly #keys: OfflineKeys;
  readonly #max: number;
  readonly #leaseMs: number;
  readonly #quota: { readonly maxMessages: number; readonly maxBytes: number };
  readonly #onOutbox: () => void;
  readonly #log: Logger;
  readonly #metrics: StoreMetrics;

  constructor(options: RedisOfflineStoreOptions) {
    if (!Number.isInteger(options.maxPerDevice) || options.maxPerDevice < 1) {
      throw new RangeError(`maxPerDevice must be a positive integer, got ${options.maxPerDevice}`);
    }
    const redis = options.redis;
    for (const [name, definition] of Object.entries(OFFLINE_SCRIPTS)) {
      if (!(name in redis)) redis.defineCommand(name, definition);
    }
    this.#redis = redis as StoreRedis;
    this.#keys = offlineKeys(options.keyPrefix, offlinePartitions(redis, options.partitions));
    this.#max = options.maxPerDevice;
    this.#leaseMs = options.leaseMs ?? 30_000;
    const quota = options.quota ?? { maxMessages: 0, maxBytes: 0 };
    const share = (bound: number) => (bound > 0 ? Math.ceil(bound / this.#keys.partitions) : 0);
    this.#quota = { maxMessages: share(quota.maxMessages), maxBytes: share(quota.maxBytes) };
    this.#onOutbox = options.onOutbox ?? (() => {});
    this.#log = options.logger.child({ component: 'offline-store' });
    this.#metrics = createMetrics(options.metrics);
  }

  /** Key names of this store (for tests and tools). */
  get keys(): OfflineKeys {
    return this.#keys;
  }

  #queue(d: string) {
    return this.#keys.queue(d);
  }
  #inflight(d: string) {
    return this.#keys.inflight(d);
  }
  #msgs(d: string) {
    return this.#keys.messages(d);
  }
  #lock(d: string) {
    return this.#keys.lock(d);
  }
  #due(d: string) {
    return this.#keys.due(this.#keys.partitionOf(d));
  }
  #leases(d: string) {
    return this.#keys.leases(this.#keys.partitionOf(d));
  }
  #seq(d: string) {
    return this.#keys.seq(this.#keys.partitionOf(d));
  }
  #outbox(d: string) {
    return this.#keys.outbox(this.#keys.partitionOf(d));
  }
  #usagePrefix(d: string) {
    return this.#keys.usagePrefix(this.#keys.partitionOf(d));
  }

  /**
   * Keeps `msg` for the device, behind what is already stored. Storing a request id that is
   * already stored for the device by the same origin changes nothing (`duplicate`). Past
   * `maxPerDevice` the oldest queued messages are evicted and recorded `expired` with reason
   * `evicted`, in the same step. A message whose origin is at its quota is refused.
   */
  async store(deviceId: string, msg: StoredMessage): Promise<StoreResult> {
    const body = StoredMessage.parse(msg);
    const field = storedField(body);
    const result = await this.#redis.pushlineOfflineStore(
      this.#queue(deviceId),
      this.#inflight(deviceId),
      this.#msgs(deviceId),
      this.#due(deviceId),
      this.#seq(deviceId),
      this.#outbox(deviceId),
      field,
      JSON.stringify(body),
      body.expiresAt,
      this.#max,
      member(deviceId, field),
      this.#usagePrefix(deviceId),
      this.#quota.maxMessages,
      this.#quota.maxBytes,
      deviceId,
      Date.now(),
    );
    if (result[0] === 0) return { stored: true, evicted: 0, duplicate: true };
    if (result[0] === -1) {
      this.#metrics.refused.inc({ reason: 'quota_exceeded' });
      return { stored: false, evicted: 0, refused: 'quota_exceeded' };
    }
    this.#metrics.stored.inc();
    const evicted = Number(result[1] ?? 0);
    if (evicted > 0) {
      this.#metrics.expired.inc({ reason: 'evicted' }, evicted);
      this.#onOutbox();
    }
    return { stored: true, evicted };
  }

  /** What an origin has stored now, over all devices (and partitions): messages and bytes of their JSON. */
  async usage(origin: string): Promise<{ messages: number; bytes: number }> {
    const replies = await sendAll(
      this.#redis,
      Array.from({ length: this.#keys.partitions }, (_, p): BatchCall => [
        'hmget',
        `${this.#keys.usagePrefix(p)}${origin}`,
        'n',
        'b',
      ]),
    );
    let messages = 0;
    let bytes = 0;
    for (const reply of replies) {
      const [n, b] = reply as (string | null)[];
      messages += Number(n ?? 0);
      bytes += Number(b ?? 0);
    }
    return { messages, bytes };
  }

  /** Stored messages of a device, queued or in flight. */
  async pending(deviceId: string): Promise<number> {
    const [count] = await this.#redis.pushlineOfflinePending(this.#queue(deviceId), this.#inflight(deviceId));
    return Number(count ?? 0);
  }

  /**
   * The devices among `deviceIds` that have stored messages (queued or in flight), in one round
   * trip: lets a caller with many requests skip the per-request check for the common case.
   */
  async withPending(deviceIds: Iterable<string>): Promise<Set<string>> {
    const ids = [...new Set(deviceIds)];
    const replies = await sendGrouped(this.#redis, ids, DEVICES_PER_PENDING_CALL, {
      one: 'pushlineOfflinePending',
      many: 'pushlineOfflinePendingMany',
      keys: (id) => [this.#queue(id), this.#inflight(id)],
    });
    const counts = replies.flatMap((reply) => (Array.isArray(reply) ? (reply as unknown[]) : []));
    // A count missing from a reply reads as "may have some": the caller's per-request check runs.
    return new Set(ids.filter((_, i) => Number(counts[i] ?? 1) > 0));
  }

  /**
   * Delivers the device's stored messages oldest first, one at a time, recording each terminal
   * outcome. A message past its expiry is recorded `expired` instead. When a delivery ends
   * `not_connected` or `timeout` (or throws), the message goes back to the head of the queue with
   * its attempt counted, and the drain stops: the device is gone again, its next connect resumes.
   * Only one drain runs per device at a time, so order holds even across servers.
   */
  async drain(
    deviceId: string,
    deliver: (msg: StoredMessage) => Promise<DeliverResult>,
    options: DrainOptions = {},
  ): Promise<void> {
    const token = randomUUID();
    // The common case, a device with nothing stored, ends here after one round trip.
    if (!(await this.#begin(deviceId, token, options.waitForLock ?? true))) return;
    let holding = true;
    try {
      holding = await this.#drainLocked(deviceId, token, deliver);
    } finally {
      if (holding) await this.#redis.pushlineOfflineUnlock(this.#lock(deviceId), token);
    }
  }

  /**
   * Delivers queued messages while the caller holds the lock. Returns whether it still holds it:
   * false when the queue ran empty (the lease script released the lock with its last look) or the
   * lock was lost; true when a delivery failed and the drain stopped early.
   */
  async #drainLocked(
    deviceId: string,
    token: string,
    deliver: (msg: StoredMessage) => Promise<DeliverResult>,
  ): Promise<boolean> {
    for (;;) {
      const leased = await this.#redis.pushlineOfflineLease(
        this.#queue(deviceId),
        this.#inflight(deviceId),
        this.#msgs(deviceId),
        this.#leases(deviceId),
        this.#lock(deviceId),
        `${deviceId}|`,
        Date.now() + this.#leaseMs,
        token,
        this.#leaseMs,
      );
      if (leased === null) return false;
      if (leased === -1) {
        this.#log.warn({ deviceId }, 'drain lost its lock (slower than the lease); another drain takes over');
        return false;
      }
      const [field, json] = leased;
      const msg = json === null ? null : this.#parse(deviceId, json);
      if (!msg) {
        await this.#finish(deviceId, field, undefined);
        continue;
      }
      if (msg.expiresAt <= Date.now()) {
        if (await this.#finish(deviceId, field, { outcome: 'expired', reason: 'ttl_elapsed' })) {
          this.#metrics.expired.inc({ reason: 'ttl' });
        }
        continue;
      }
      let result: DeliverResult;
      try {
        result = await deliver(msg);
      } catch (err) {
        this.#log.warn(
          { err, deviceId, requestId: msg.requestId },
          'delivering a stored message failed; kept for later',
        );
        await this.#release(deviceId, field, { ...msg, attempts: msg.attempts + 1 });
        this.#metrics.requeued.inc({ reason: 'error' });
        return true;
      }
      if (!TERMINAL_ON_DRAIN.has(result.outcome)) {
        await this.#release(deviceId, field, { ...msg, attempts: msg.attempts + 1 });
        this.#metrics.requeued.inc({ reason: result.outcome });
        return true;
      }
      const finished = await this.#finish(deviceId, field, {
        outcome: result.outcome,
        reason: result.reason ?? '',
        attempts: msg.attempts + 1,
      });
      if (finished) {
        this.#metrics.drained.inc({ outcome: result.outcome });
        if (result.outcome === 'delivered')
          this.#metrics.publishToAck?.observe(
            { source: 'offline' },
            Math.max(0, Date.now() - msg.createdAt) / 1000,
          );
      } else {
        // The lease ran out during the delivery and the sweeper re-queued the message: the next
        // drain delivers it again (the device sees a redelivery, documented as at-least-once).
        this.#log.warn(
          { deviceId, requestId: msg.requestId },
          'stored message delivered after its lease ran out',
        );
      }
    }
  }

  /**
   * Records `expired` for every stored message whose expiry is at or before `now` (at most
   * `limit` per partition per call), and returns leases of dead drains to their queues, in every
   * partition. Safe to run on any number of instances at once: each message is claimed by one of
   * them. Returns how many messages it expired.
   */
  async sweepExpired(now: number = Date.now(), limit = 500): Promise<number> {
    const partitions = Array.from({ length: this.#keys.partitions }, (_, p) => p);
    const [stale, due] = await Promise.all([
      sendAll(
        this.#redis,
        partitions.map((p): BatchCall => [
          'zrangebyscore',
          this.#keys.leases(p),
          '-inf',
          now,
          'LIMIT',
          0,
          limit,
        ]),
      ),
      sendAll(
        this.#redis,
        partitions.map((p): BatchCall => [
          'zrangebyscore',
          this.#keys.due(p),
          '-inf',
          now,
          'LIMIT',
          0,
          limit,
        ]),
      ),
    ]);
    await this.#reclaimLeases(now, stale as string[][]);
    const claims: BatchCall[] = [];
    const unreadable: BatchCall[] = [];
    (due as string[][]).forEach((entries, p) => {
      for (const entry of entries) {
        const parsed = parseMember(entry);
        if (!parsed) {
          unreadable.push(['zrem', this.#keys.due(p), entry]);
          continue;
        }
        const { deviceId, field } = parsed;
        claims.push([
          'pushlineOfflineClaimExpired',
          this.#queue(deviceId),
          this.#inflight(deviceId),
          this.#msgs(deviceId),
          this.#keys.due(p),
          this.#keys.outbox(p),
          field,
          entry,
          now,
          this.#keys.usagePrefix(p),
          deviceId,
        ]);
      }
    });
    const claimed = await sendAll(this.#redis, [...claims, ...unreadable]);
    const expired = claimed.slice(0, claims.length).filter((r) => r === 1).length;
    if (expired > 0) {
      this.#metrics.expired.inc({ reason: 'ttl' }, expired);
      this.#onOutbox();
    }
    return expired;
  }

  async #reclaimLeases(now: number, stale: readonly string[][]): Promise<void> {
    const calls: BatchCall[] = [];
    const parsedCalls: { deviceId: string; field: string }[] = [];
    stale.forEach((entries, p) => {
      for (const entry of entries) {
        const parsed = parseMember(entry);
        if (!parsed) {
          calls.push(['zrem', this.#keys.leases(p), entry]);
          continue;
        }
        parsedCalls.push(parsed);
        calls.push([
          'pushlineOfflineReclaim',
          this.#queue(parsed.deviceId),
          this.#inflight(parsed.deviceId),
          this.#keys.leases(p),
          parsed.field,
          entry,
          now,
        ]);
      }
    });
    const replies = await sendAll(this.#redis, calls);
    let reclaimIndex = 0;
    calls.forEach((call, i) => {
      if (call[0] !== 'pushlineOfflineReclaim') return;
      const parsed = parsedCalls[reclaimIndex++];
      if (replies[i] !== 1 || !parsed) return;
      this.#metrics.reclaimed.inc();
      this.#log.warn(parsed, 'stored message leased by a drain that died; back in its queue');
    });
  }

  /**
   * Takes the device's drain lock when something is queued. Resolves false when there is nothing
   * to drain, or when another drain holds the lock and `wait` is false (or it held it past the lease).
   */
  async #begin(deviceId: string, token: string, wait: boolean): Promise<boolean> {
    const deadline = Date.now() + this.#leaseMs;
    for (let attempt = 0; ; attempt++) {
      const begun = await this.#redis.pushlineOfflineBegin(
        this.#queue(deviceId),
        this.#lock(deviceId),
        token,
        this.#leaseMs,
      );
      if (begun === NOTHING_QUEUED) return false;
      if (begun === LOCKED) return true;
      if (!wait || Date.now() >= deadline) return false;
      // No event tells us when another instance's drain ends; re-check at a gentle pace.
      await new Promise((resolve) => setTimeout(resolve, Math.min(250, 20 * 2 ** attempt)));
    }
  }

  /**
   * Ends a leased message; with an outcome, records it in the outbox in the same step. False when
   * the lease had been taken back (nothing recorded).
   */
  async #finish(
    deviceId: string,
    field: string,
    outcome: { outcome: DeliveryOutcome; reason: string; attempts?: number } | undefined,
  ): Promise<boolean> {
    const done = await this.#redis.pushlineOfflineFinish(
      this.#inflight(deviceId),
      this.#msgs(deviceId),
      this.#due(deviceId),
      this.#leases(deviceId),
      this.#outbox(deviceId),
      field,
      member(deviceId, field),
      this.#usagePrefix(deviceId),
      deviceId,
      outcome?.outcome ?? '',
      outcome?.reason ?? '',
      outcome?.attempts ?? '',
      Date.now(),
    );
    if (done === 1 && outcome) this.#onOutbox();
    return done === 1;
  }

  async #release(deviceId: string, field: string, msg: StoredMessage): Promise<void> {
    await this.#redis.pushlineOfflineRelease(
      this.#queue(deviceId),
      this.#inflight(deviceId),
      this.#msgs(deviceId),
      this.#leases(deviceId),
      field,
      member(deviceId, field),
      JSON.stringify(msg),
      this.#usagePrefix(deviceId),
    );
  }

  #parse(deviceId: string, json: string): StoredMessage | null {
    try {
      return StoredMessage.parse(JSON.parse(json));
    } catch (err) {
      this.#log.error({ err, deviceId }, 'dropping an unreadable stored message');
      return null;
    }
  }
}

/** A message's field in its device's structures: request ids are deduplicated per origin. */
function storedField(msg: StoredMessage): string {
  return msg.origin === undefined ? msg.requestId : `${msg.origin}/${msg.requestId}`;
}

function member(deviceId: string, field: string): string {
  return `${deviceId}|${field}`;
}

/** Device, origin and message ids never hold `|` (see Identifier / MessageId), so the split is unambiguous. */
function parseMember(entry: string): { deviceId: string; field: string } | null {
  const at = entry.indexOf('|');
  if (at <= 0 || at === entry.length - 1) return null;
  return { deviceId: entry.slice(0, at), field: entry.slice(at + 1) };
}

function createMetrics(registry: Registry | undefined): StoreMetrics {
  // Without a registry the counters still count (tests read nothing from them) but export nowhere.
  const target = registry ?? new Registry();
  const counter = <L extends string>(name: string, help: string, labels: LabelValues<L>) => {
    const existing = target.getSingleMetric(name);
    if (existing) return existing as Counter<L>;
    return stageCounter<L>({ name, help, labels, registry: target });
  };
  return {
    stored: counter('pushline_offline_stored_total', 'Messages stored for offline devices.', {}),
    refused: counter(
      'pushline_offline_refused_total',
      'Messages not stored because their origin (API key) reached its quota (reason quota_exceeded).',
      { reason: ['quota_exceeded'] },
    ),
    expired: counter(
      'pushline_offline_expired_total',
      'Stored messages recorded expired: reason ttl (ran out) or evicted (device over its limit).',
      { reason: ['ttl', 'evicted'] },
    ),
    drained: counter(
      'pushline_offline_drained_total',
      'Stored messages delivered on reconnect, by terminal outcome.',
      { outcome: [...TERMINAL_ON_DRAIN] },
    ),
    requeued: counter(
      'pushline_offline_requeued_total',
      'Stored messages put back because their delivery failed (not_connected, timeout, error).',
      { reason: ['not_connected', 'timeout', 'error'] },
    ),
    reclaimed: counter(
      'pushline_offline_lease_reclaimed_total',
      'Stored messages returned to their queue after the drain holding them died.',
      {},
    ),
    publishToAck: registry ? publishToAckHistogram(registry) : undefined,
  };
}
