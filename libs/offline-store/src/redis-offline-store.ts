import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { DeliveryEvent, StoredMessage, type DeliverResult, type DeliveryOutcome } from '@pushline/protocol';
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
   * Records a terminal outcome (delivered, rejected or expired). Called exactly once per stored
   * message, by whichever of drain, sweeper or eviction claimed it. A returned promise is awaited,
   * so a caller that produces to Kafka with acks=all knows the event is durable before it moves on.
   */
  readonly publishOutcome: (ev: DeliveryEvent) => void | Promise<void>;
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
  /** The request id was already stored for this device; nothing changed. */
  readonly duplicate?: boolean;
}

type StoreRedis = Redis & {
  pushlineOfflineStore(...args: (string | number)[]): Promise<(number | string)[]>;
  pushlineOfflineBegin(...args: (string | number)[]): Promise<Begin>;
  pushlineOfflineUnlock(...args: (string | number)[]): Promise<number>;
  pushlineOfflineLease(...args: (string | number)[]): Promise<-1 | null | [string, string | null]>;
  pushlineOfflineFinish(...args: (string | number)[]): Promise<number>;
  pushlineOfflineRelease(...args: (string | number)[]): Promise<number>;
  pushlineOfflineReclaim(...args: (string | number)[]): Promise<number>;
  pushlineOfflineClaimExpired(...args: (string | number)[]): Promise<string | null>;
  pushlineOfflinePending(...args: (string | number)[]): Promise<number>;
};

interface StoreMetrics {
  stored: Counter;
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
 * Every stored message ends in exactly one terminal outcome, published through `publishOutcome`.
 */
export class RedisOfflineStore implements OfflineInbox {
  readonly #redis: StoreRedis;
  readonly #p: string;
  readonly #max: number;
  readonly #leaseMs: number;
  readonly #publish: (ev: DeliveryEvent) => void | Promise<void>;
  readonly #log: Logger;
  readonly #m: StoreMetrics;

  constructor(options: RedisOfflineStoreOptions) {
    if (!Number.isInteger(options.maxPerDevice) || options.maxPerDevice < 1) {
      throw new RangeError(`maxPerDevice must be a positive integer, got ${options.maxPerDevice}`);
    }
    const redis = options.redis;
    if (!('pushlineOfflineStore' in redis)) {
      redis.defineCommand('pushlineOfflineStore', { numberOfKeys: 5, lua: STORE });
      redis.defineCommand('pushlineOfflineBegin', { numberOfKeys: 2, lua: BEGIN });
      redis.defineCommand('pushlineOfflineUnlock', { numberOfKeys: 1, lua: UNLOCK });
      redis.defineCommand('pushlineOfflineLease', { numberOfKeys: 5, lua: LEASE });
      redis.defineCommand('pushlineOfflineFinish', { numberOfKeys: 4, lua: FINISH });
      redis.defineCommand('pushlineOfflineRelease', { numberOfKeys: 4, lua: RELEASE });
      redis.defineCommand('pushlineOfflineReclaim', { numberOfKeys: 3, lua: RECLAIM });
      redis.defineCommand('pushlineOfflineClaimExpired', { numberOfKeys: 4, lua: CLAIM_EXPIRED });
      redis.defineCommand('pushlineOfflinePending', { numberOfKeys: 2, lua: PENDING });
    }
    this.#redis = redis as StoreRedis;
    this.#p = options.keyPrefix;
    this.#max = options.maxPerDevice;
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.#publish = options.publishOutcome;
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

  /**
   * Keeps `msg` for the device, behind what is already stored. Storing a request id that is
   * already stored for the device changes nothing (`duplicate`). Past `maxPerDevice` the oldest
   * queued messages are evicted and recorded `expired` with reason `evicted`.
   */
  async store(deviceId: string, msg: StoredMessage): Promise<StoreResult> {
    const body = StoredMessage.parse(msg);
    const result = await this.#redis.pushlineOfflineStore(
      this.#q(deviceId),
      this.#f(deviceId),
      this.#msgs(deviceId),
      this.#due,
      this.#seq,
      body.requestId,
      JSON.stringify(body),
      body.expiresAt,
      this.#max,
      member(deviceId, body.requestId),
    );
    if (result[0] === 0) return { stored: true, evicted: 0, duplicate: true };
    this.#m.stored.inc();
    const evicted = result.slice(1).filter((v): v is string => typeof v === 'string');
    for (const json of evicted) {
      const old = this.#parse(deviceId, json);
      if (!old) continue;
      this.#m.expired.inc({ reason: 'evicted' });
      await this.#record(deviceId, old, 'expired', { attempts: old.attempts, reason: 'evicted' });
    }
    return { stored: true, evicted: evicted.length };
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
      const [requestId, json] = leased;
      const msg = json === null ? null : this.#parse(deviceId, json);
      if (!msg) {
        await this.#finish(deviceId, requestId);
        continue;
      }
      if (msg.expiresAt <= Date.now()) {
        if (await this.#finish(deviceId, requestId)) {
          this.#m.expired.inc({ reason: 'ttl' });
          await this.#record(deviceId, msg, 'expired', { attempts: msg.attempts, reason: 'ttl_elapsed' });
        }
        continue;
      }
      let result: DeliverResult;
      try {
        result = await deliver(msg);
      } catch (err) {
        this.#log.warn({ err, deviceId, requestId }, 'delivering a stored message failed; kept for later');
        await this.#release(deviceId, { ...msg, attempts: msg.attempts + 1 });
        this.#m.requeued.inc({ reason: 'error' });
        return true;
      }
      if (!TERMINAL_ON_DRAIN.has(result.outcome)) {
        await this.#release(deviceId, { ...msg, attempts: msg.attempts + 1 });
        this.#m.requeued.inc({ reason: result.outcome });
        return true;
      }
      if (await this.#finish(deviceId, requestId)) {
        this.#m.drained.inc({ outcome: result.outcome });
        if (result.outcome === 'delivered')
          this.#m.publishToAck?.observe(
            { source: 'offline' },
            Math.max(0, Date.now() - msg.createdAt) / 1000,
          );
        await this.#record(deviceId, msg, result.outcome, {
          attempts: msg.attempts + 1,
          ...(result.reason === undefined ? {} : { reason: result.reason }),
        });
      } else {
        // The lease ran out during the delivery and the sweeper re-queued the message: the next
        // drain delivers it again (the device sees a redelivery, documented as at-least-once).
        this.#log.warn({ deviceId, requestId }, 'stored message delivered after its lease ran out');
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
      const { deviceId, requestId } = parsed;
      const json = await this.#redis.pushlineOfflineClaimExpired(
        this.#q(deviceId),
        this.#f(deviceId),
        this.#msgs(deviceId),
        this.#due,
        requestId,
        entry,
        now,
      );
      if (json === null) continue;
      const msg = this.#parse(deviceId, json);
      if (!msg) continue;
      expired++;
      this.#m.expired.inc({ reason: 'ttl' });
      await this.#record(deviceId, msg, 'expired', { attempts: msg.attempts, reason: 'ttl_elapsed' });
    }
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
        parsed.requestId,
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

  async #finish(deviceId: string, requestId: string): Promise<boolean> {
    const done = await this.#redis.pushlineOfflineFinish(
      this.#f(deviceId),
      this.#msgs(deviceId),
      this.#due,
      this.#leases,
      requestId,
      member(deviceId, requestId),
    );
    return done === 1;
  }

  async #release(deviceId: string, msg: StoredMessage): Promise<void> {
    await this.#redis.pushlineOfflineRelease(
      this.#q(deviceId),
      this.#f(deviceId),
      this.#msgs(deviceId),
      this.#leases,
      msg.requestId,
      member(deviceId, msg.requestId),
      JSON.stringify(msg),
    );
  }

  async #record(
    deviceId: string,
    msg: StoredMessage,
    outcome: DeliveryOutcome,
    extra: { attempts: number; reason?: string },
  ): Promise<void> {
    const now = Date.now();
    const event: DeliveryEvent = {
      v: 1,
      requestId: msg.requestId,
      target: msg.target,
      deviceId,
      outcome,
      terminal: true,
      source: 'offline',
      latencyMs: Math.max(0, now - msg.createdAt),
      attempts: Math.max(1, extra.attempts),
      at: now,
      ...(extra.reason === undefined ? {} : { reason: extra.reason }),
    };
    try {
      await this.#publish(DeliveryEvent.parse(event));
    } catch (err) {
      // The message is already claimed, so it cannot be recorded again: say so loudly.
      this.#log.error({ err, deviceId, requestId: msg.requestId, outcome }, 'publishing an outcome failed');
      throw err;
    }
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

function member(deviceId: string, requestId: string): string {
  return `${deviceId}|${requestId}`;
}

/** Device and message ids never hold `|` (see Identifier / MessageId), so the split is unambiguous. */
function parseMember(entry: string): { deviceId: string; requestId: string } | null {
  const at = entry.indexOf('|');
  if (at <= 0 || at === entry.length - 1) return null;
  return { deviceId: entry.slice(0, at), requestId: entry.slice(at + 1) };
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
