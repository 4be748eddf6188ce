import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
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
import { BEGIN, CLAIM_EXPIRED, FINISH, LEASE, PENDING, RECLAIM, RELEASE, STORE, UNLOCK } from './scripts.ts';

/** The inbox a connection server drains when a device connects (the `OfflineInbox` contract). */
export interface OfflineInbox {
  drain(deviceId: string, deliver: (msg: StoredMessage) => Promise<DeliverResult>): Promise<void>;
}

export interface RedisOfflineStoreOptions {
  /** A connected ioredis client; the store does not own it and never closes it. */
  readonly redis: Redis;
  /** Prefix of every key, e.g. `pushline:`. */
  readonly keyPrefix: string;
  /** Messages kept per device; storing past it evicts the oldest, which is recorded `expired` (reason `evicted`). */
  readonly maxPerDevice: number;
  /**
   * Bounds of what one origin (the API key a message came from) may have stored at once, over
   * all devices: messages, and bytes of their JSON. A store past either is refused
   * (`refused: 'quota_exceeded'`). Messages without an origin are not counted. Default: no bound.
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

type StoreRedis = Redis & {
  pushlineOfflineStore(...args: (string | number)[]): Promise<(number | string)[]>;
  pushlineOfflineBegin(...args: (string | number)[]): Promise<Begin>;
  pushlineOfflineUnlock(...args: (string | number)[]): Promise<number>;
  pushlineOfflineLease(...args: (string | number)[]): Promise<-1 | null | [string, string | null]>;
  pushlineOfflineFinish(...args: (string | number)[]): Promise<number>;
  pushlineOfflineRelease(...args: (string | number)[]): Promise<number>;
  pushlineOfflineReclaim(...args: (string | number)[]): Promise<number>;
  pushlineOfflineClaimExpired(...args: (string | number)[]): Promise<number>;
  pushlineOfflinePending(...args: (string | number)[]): Promise<number>;
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
  readonly #p: string;
  readonly #max: number;
  readonly #leaseMs: number;
  readonly #quota: { readonly maxMessages: number; readonly maxBytes: number };
  readonly #onOutbox: () => void;
  readonly #log: Logger;
  readonly #m: StoreMetrics;

  constructor(options: RedisOfflineStoreOptions) {
    if (!Number.isInteger(options.maxPerDevice) || options.maxPerDevice < 1) {
      throw new RangeError(`maxPerDevice must be a positive integer, got ${options.maxPerDevice}`);
    }
    const redis = options.redis;
    if (!('pushlineOfflineStore' in redis)) {
      redis.defineCommand('pushlineOfflineStore', { numberOfKeys: 6, lua: STORE });
      redis.defineCommand('pushlineOfflineBegin', { numberOfKeys: 2, lua: BEGIN });
      redis.defineCommand('pushlineOfflineUnlock', { numberOfKeys: 1, lua: UNLOCK });
      redis.defineCommand('pushlineOfflineLease', { numberOfKeys: 5, lua: LEASE });
      redis.defineCommand('pushlineOfflineFinish', { numberOfKeys: 5, lua: FINISH });
      redis.defineCommand('pushlineOfflineRelease', { numberOfKeys: 4, lua: RELEASE });
      redis.defineCommand('pushlineOfflineReclaim', { numberOfKeys: 3, lua: RECLAIM });
      redis.defineCommand('pushlineOfflineClaimExpired', { numberOfKeys: 5, lua: CLAIM_EXPIRED });
      redis.defineCommand('pushlineOfflinePending', { numberOfKeys: 2, lua: PENDING });
    }
    this.#redis = redis as StoreRedis;
    this.#p = options.keyPrefix;
    this.#max = options.maxPerDevice;
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#quota = options.quota ?? { maxMessages: 0, maxBytes: 0 };
    this.#onOutbox = options.onOutbox ?? (() => {});
    this.#log = options.logger.child({ component: 'offline-store' });
    this.#m = createMetrics(options.metrics);
  }

  #q(d: string) {
    return `${this.#p}offline:q:${d}`;
  }
  #f(d: string) {
    return `${this.#p}offline:f:${d}`;
  }
  #msgs(d: string) {
    return `${this.#p}offline:m:${d}`;
  }
  #lock(d: string) {
    return `${this.#p}offline:lock:${d}`;
  }
  get #due() {
    return `${this.#p}offline:due`;
  }
  get #leases() {
    return `${this.#p}offline:leases`;
  }
  get #seq() {
    return `${this.#p}offline:seq`;
  }
  get #outbox() {
    return outboxKey(this.#p);
  }
  get #usagePrefix() {
    return `${this.#p}offline:usage:`;
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
      this.#q(deviceId),
      this.#f(deviceId),
      this.#msgs(deviceId),
      this.#due,
      this.#seq,
      this.#outbox,
      field,
      JSON.stringify(body),
      body.expiresAt,
      this.#max,
      member(deviceId, field),
      this.#usagePrefix,
      this.#quota.maxMessages,
      this.#quota.maxBytes,
      deviceId,
      Date.now(),
    );
    if (result[0] === 0) return { stored: true, evicted: 0, duplicate: true };
    if (result[0] === -1) {
      this.#m.refused.inc({ reason: 'quota_exceeded' });
      return { stored: false, evicted: 0, refused: 'quota_exceeded' };
    }
    this.#m.stored.inc();
    const evicted = Number(result[1] ?? 0);
    if (evicted > 0) {
      this.#m.expired.inc({ reason: 'evicted' }, evicted);
      this.#onOutbox();
    }
    return { stored: true, evicted };
  }

  /** What an origin has stored now, over all devices: messages and bytes of their JSON. */
  async usage(origin: string): Promise<{ messages: number; bytes: number }> {
    const [n, b] = await this.#redis.hmget(`${this.#usagePrefix}${origin}`, 'n', 'b');
    return { messages: Number(n ?? 0), bytes: Number(b ?? 0) };
  }

  /** Stored messages of a device, queued or in flight. */
  pending(deviceId: string): Promise<number> {
    return this.#redis.pushlineOfflinePending(this.#q(deviceId), this.#f(deviceId));
  }

  /**
   * The devices among `deviceIds` that have stored messages (queued or in flight), in one round
   * trip: lets a caller with many requests skip the per-request check for the common case.
   */
  async withPending(deviceIds: Iterable<string>): Promise<Set<string>> {
    const ids = [...new Set(deviceIds)];
    const found = new Set<string>();
    if (ids.length === 0) return found;
    const pipe = this.#redis.pipeline() as ReturnType<Redis['pipeline']> & {
      pushlineOfflinePending(...args: (string | number)[]): unknown;
    };
    for (const id of ids) pipe.pushlineOfflinePending(this.#q(id), this.#f(id));
    const results = (await pipe.exec()) ?? [];
    results.forEach(([err, count], i) => {
      if (err) throw err;
      if (Number(count) > 0) found.add(ids[i] as string);
    });
    return found;
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
        this.#q(deviceId),
        this.#f(deviceId),
        this.#msgs(deviceId),
        this.#leases,
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
          this.#m.expired.inc({ reason: 'ttl' });
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
        this.#m.requeued.inc({ reason: 'error' });
        return true;
      }
      if (!TERMINAL_ON_DRAIN.has(result.outcome)) {
        await this.#release(deviceId, field, { ...msg, attempts: msg.attempts + 1 });
        this.#m.requeued.inc({ reason: result.outcome });
        return true;
      }
      const finished = await this.#finish(deviceId, field, {
        outcome: result.outcome,
        reason: result.reason ?? '',
        attempts: msg.attempts + 1,
      });
      if (finished) {
        this.#m.drained.inc({ outcome: result.outcome });
        if (result.outcome === 'delivered')
          this.#m.publishToAck?.observe(
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
   * `limit` per call), and returns leases of dead drains to their queues. Safe to run on any
   * number of instances at once: each message is claimed by one of them. Returns how many
   * messages it expired.
   */
  async sweepExpired(now: number = Date.now(), limit = 500): Promise<number> {
    await this.#reclaimLeases(now, limit);
    const due = await this.#redis.zrangebyscore(this.#due, '-inf', now, 'LIMIT', 0, limit);
    let expired = 0;
    for (const entry of due) {
      const parsed = parseMember(entry);
      if (!parsed) {
        await this.#redis.zrem(this.#due, entry);
        continue;
      }
      const { deviceId, field } = parsed;
      const claimed = await this.#redis.pushlineOfflineClaimExpired(
        this.#q(deviceId),
        this.#f(deviceId),
        this.#msgs(deviceId),
        this.#due,
        this.#outbox,
        field,
        entry,
        now,
        this.#usagePrefix,
        deviceId,
      );
      if (claimed !== 1) continue;
      expired++;
      this.#m.expired.inc({ reason: 'ttl' });
    }
    if (expired > 0) this.#onOutbox();
    return expired;
  }

  async #reclaimLeases(now: number, limit: number): Promise<void> {
    const stale = await this.#redis.zrangebyscore(this.#leases, '-inf', now, 'LIMIT', 0, limit);
    for (const entry of stale) {
      const parsed = parseMember(entry);
      if (!parsed) {
        await this.#redis.zrem(this.#leases, entry);
        continue;
      }
      const taken = await this.#redis.pushlineOfflineReclaim(
        this.#q(parsed.deviceId),
        this.#f(parsed.deviceId),
        this.#leases,
        parsed.field,
        entry,
        now,
      );
      if (taken === 1) {
        this.#m.reclaimed.inc();
        this.#log.warn(parsed, 'stored message leased by a drain that died; back in its queue');
      }
    }
  }

  /**
   * Takes the device's drain lock when something is queued. Resolves false when there is nothing
   * to drain, or when another drain holds the lock and `wait` is false (or it held it past the lease).
   */
  async #begin(deviceId: string, token: string, wait: boolean): Promise<boolean> {
    const deadline = Date.now() + this.#leaseMs;
    for (let attempt = 0; ; attempt++) {
      const begun = await this.#redis.pushlineOfflineBegin(
        this.#q(deviceId),
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
      this.#f(deviceId),
      this.#msgs(deviceId),
      this.#due,
      this.#leases,
      this.#outbox,
      field,
      member(deviceId, field),
      this.#usagePrefix,
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
      this.#q(deviceId),
      this.#f(deviceId),
      this.#msgs(deviceId),
      this.#leases,
      field,
      member(deviceId, field),
      JSON.stringify(msg),
      this.#usagePrefix,
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

/** The outbox stream of the offline store under `keyPrefix`. */
export function outboxKey(keyPrefix: string): string {
  return `${keyPrefix}offline:outbox`;
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
