import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { RecordedOutcome } from '@pushline/protocol';
import { sendAll, sendGrouped, type BatchCall, type RedisClient } from '@pushline/registry';
import type { Logger } from '@pushline/telemetry';

/** The request's record was revoked or the processor is closing while it waited for another holder. */
export class ClaimAbandonedError extends Error {
  override readonly name = 'ClaimAbandonedError';
  readonly requestId: string;
  constructor(requestId: string) {
    super(`stopped waiting for request ${requestId}: the record is no longer ours`);
    this.requestId = requestId;
  }
}

export interface RequestLedgerOptions {
  /** A connected ioredis client (one Redis or a cluster); not owned. */
  readonly redis: RedisClient;
  readonly keyPrefix: string;
  readonly instanceId: string;
  /**
   * How long a claim outlives its last renewal. Claims are renewed every third of it while held,
   * so a holder that dies frees its requests at most this long after it died.
   */
  readonly claimTtlMs: number;
  /** How long a completed request id is remembered. */
  readonly windowSeconds: number;
  readonly logger: Logger;
  /** Called when a request is held by someone else and this caller waits for it. */
  readonly onWait?: () => void;
  /** Called for each held claim a renewal found gone (expired while Redis was away, or taken over). */
  readonly onLost?: () => void;
  /** Called when a renewal round fails (Redis unreachable). */
  readonly onRenewFailure?: (err: unknown) => void;
}

/**
 * One request's claim: its ledger key and the token this processor claims it with. The token is
 * drawn once per record handed over and kept across retries, so a claim whose reply was lost (a
 * Redis that hung or restarted) is recognised as ours instead of waited out.
 */
export interface Claim {
  readonly requestId: string;
  readonly key: string;
  readonly token: string;
  /**
   * Requests with a ttl only: where a processor notes that it is sending the request, so one that
   * takes it over after a crash knows it was sent in time (`<P>sent:{<origin>/<id>}`).
   */
  readonly sentKey: string | undefined;
  /** Where the request's outcome is recorded before it is published (`recordOutcomes`). */
  readonly outcomeKey: string;
}

export type ClaimStatus =
  /** This caller holds the request and must `complete` or `release` it. */
  | 'claimed'
  /**
   * This caller holds the request, and an earlier holder recorded its outcome (`recordOutcomes`)
   * and died or gave up before marking it done: its events may or may not be in Kafka. Publish
   * those that are not (`recordedOutcome`), then `completeMany`; never handle the request again.
   */
  | 'recorded'
  /** The request already has its outcome recorded: skip it. */
  | 'done'
  /** Someone else holds it now. */
  | 'held';

const DONE = 'done';

/**
 * KEYS claim₁ outcome₁ claim₂ outcome₂ …; ARGV ttlMs token₁ token₂ …. For each request: takes the
 * claim if nobody holds it, or renews it if we already do. Returns one status per request: 1
 * claimed, 3 claimed with an outcome recorded by an earlier holder, 2 done, 0 held by someone else.
 */
const CLAIM = `
local statuses = {}
for i = 1, #KEYS / 2 do
  local key, token = KEYS[2 * i - 1], ARGV[i + 1]
  local v = redis.call('GET', key)
  local status = 1
  if v == '${DONE}' then
    status = 2
  elseif v == false then
    redis.call('SET', key, token, 'PX', ARGV[1])
  elseif v == token then
    redis.call('PEXPIRE', key, ARGV[1])
  else
    status = 0
  end
  if status == 1 and redis.call('EXISTS', KEYS[2 * i]) == 1 then status = 3 end
  statuses[i] = status
end
return statuses
`;

// Compare-and-expire: only our own claim is renewed, never a newer holder's or `done`.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
`;

/**
 * KEYS outcome₁ outcome₂ …; ARGV windowSeconds value₁ value₂ …. Records each request's outcome
 * for the dedupe window.
 */
const RECORD = `
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ARGV[1]) end
return #KEYS
`;

/**
 * KEYS claim₁ outcome₁ sent₁ claim₂ …; ARGV windowSeconds. Marks each request done and forgets
 * what led there.
 */
const COMPLETE = `
for i = 1, #KEYS, 3 do
  redis.call('SET', KEYS[i], '${DONE}', 'EX', ARGV[1])
  redis.call('DEL', KEYS[i + 1], KEYS[i + 2])
end
return #KEYS / 3
`;

// Compare-and-delete: only the holder's own claim is dropped, never a newer holder's or `done`.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Every script the ledger sends, with its keys (one request's, so one slot: the slot test). Claim,
 * record and complete take any number of requests: each is defined a second time without
 * `numberOfKeys`, for calls of many requests on one Redis (`GroupedScript`).
 */
export const LEDGER_SCRIPTS = {
  pushlineLedgerClaim: { numberOfKeys: 2, lua: CLAIM },
  pushlineLedgerClaimMany: { lua: CLAIM },
  pushlineLedgerRenew: { numberOfKeys: 1, lua: RENEW },
  pushlineLedgerRecord: { numberOfKeys: 1, lua: RECORD },
  pushlineLedgerRecordMany: { lua: RECORD },
  pushlineLedgerComplete: { numberOfKeys: 3, lua: COMPLETE },
  pushlineLedgerCompleteMany: { lua: COMPLETE },
  pushlineLedgerRelease: { numberOfKeys: 1, lua: RELEASE },
} as const;

/**
 * Most requests one script call takes on one Redis (`sendGrouped`), so one call does not hold
 * Redis for long: claims of 256 requests ran 1.6 ms in Redis on the 2-core bench machine (`INFO
 * commandstats`), so 64 take about 0.4 ms. The processor's batches average about 20 claims and 90
 * completions per call at the async bench's full rate, so the bound costs little.
 */
const REQUESTS_PER_CALL = 64;

interface LedgerCommands {
  pushlineLedgerClaim(key: string, outcomeKey: string, ttlMs: number, token: string): Promise<unknown>;
  pushlineLedgerRenew(key: string, token: string, ttlMs: number): Promise<number>;
  pushlineLedgerRelease(key: string, token: string): Promise<number>;
}
type LedgerRedis = RedisClient & LedgerCommands;

/** The scope of request ids produced straight into Kafka, without an origin (not a valid origin id). */
const NO_ORIGIN_SCOPE = '~kafka';

/**
 * The ledger's keys of a request of `origin` (scoped `<origin>/<id>`): both carry the request as
 * hash tag, so they share a slot on a Redis Cluster, and requests spread over the slots.
 */
function ledgerKeys(keyPrefix: string, scoped: string): { claim: string; sent: string; outcome: string } {
  return {
    claim: `${keyPrefix}req:{${scoped}}`,
    sent: `${keyPrefix}sent:{${scoped}}`,
    outcome: `${keyPrefix}outcome:{${scoped}}`,
  };
}

/**
 * Processor-level idempotency by request id within its origin, in Redis at
 * `<P>req:{<origin>/<id>}` (`~kafka` for records without an origin, which no API key id can be):
 *   absent                 never seen (or forgotten after the window)
 *   `proc:<instance>:<n>`  being processed; expires `claimTtlMs` after its holder last renewed it
 *   `done`                 outcome published, remembered `windowSeconds` (EX)
 * and, between recording a request's outcome and marking it done, `<P>outcome:{<origin>/<id>}`
 * holds the events to publish (`recordOutcomes`). A record redelivered by Kafka (restart,
 * rebalance) finds `done` and is skipped, or finds the recorded outcome and publishes only what
 * the log lacks, so it does not produce a second terminal outcome; another origin's request with the same id is a different
 * key. Claims held by this instance are renewed in the background, so a long wait behind a slow
 * device never lets another processor take a request over, while a dead processor's claims are
 * free within `claimTtlMs` (docs/delivery-guarantees.md).
 */
export class RequestLedger {
  readonly #redis: LedgerRedis;
  readonly #options: RequestLedgerOptions;
  /** Claims this instance holds (as far as it knows): key → token. */
  readonly #held = new Map<string, string>();
  #renewTimer: NodeJS.Timeout | undefined;
  #renewing: Promise<void> | undefined;

  constructor(options: RequestLedgerOptions) {
    const redis = options.redis;
    for (const [name, definition] of Object.entries(LEDGER_SCRIPTS)) {
      if (!(name in redis)) redis.defineCommand(name, definition);
    }
    this.#redis = redis as LedgerRedis;
    this.#options = options;
  }

  /** Starts renewing held claims every third of the claim TTL. */
  start(): void {
    const every = Math.max(50, Math.floor(this.#options.claimTtlMs / 3));
    this.#renewTimer = setInterval(() => {
      this.#renewing ??= this.#renew().finally(() => (this.#renewing = undefined));
    }, every);
  }

  /** Stops renewing; claims still held expire after the TTL. */
  async close(): Promise<void> {
    clearInterval(this.#renewTimer);
    this.#renewTimer = undefined;
    await this.#renewing;
  }

  /** Claims held now, as far as this instance knows. */
  get held(): number {
    return this.#held.size;
  }

  /**
   * A new claim for a request of `origin` (undefined: produced straight into Kafka); `hasTtl`
   * requests also get a sent mark (see `markSent`).
   */
  claimFor(requestId: string, origin: string | undefined, hasTtl = false): Claim {
    const keys = ledgerKeys(this.#options.keyPrefix, `${origin ?? NO_ORIGIN_SCOPE}/${requestId}`);
    return {
      requestId,
      key: keys.claim,
      token: `proc:${this.#options.instanceId}:${randomUUID()}`,
      sentKey: hasTtl ? keys.sent : undefined,
      outcomeKey: keys.outcome,
    };
  }

  /**
   * Notes, before the first send, that the request is being sent within its ttl. A processor that
   * dies before recording the outcome leaves it behind (for the dedupe window at most; `complete`
   * removes it), so the one that takes the request over after its ttl ran out sends it again
   * rather than reporting `expired` for a message the device may have acked.
   */
  async markSent(claim: Claim): Promise<void> {
    if (claim.sentKey) await this.#redis.set(claim.sentKey, '1', 'EX', this.#options.windowSeconds);
  }

  /** Whether an earlier attempt noted that it sent the request (`markSent`) without completing it. */
  async wasSent(claim: Claim): Promise<boolean> {
    return claim.sentKey !== undefined && (await this.#redis.exists(claim.sentKey)) === 1;
  }

  /** Whether this instance holds the claim (taken, and no renewal found it gone since). */
  holds(claim: Claim): boolean {
    return this.#held.get(claim.key) === claim.token;
  }

  /**
   * Claims many requests in one round trip. A request this call could not take comes back as
   * `held` or `done`; settle a held one with `claim`, which waits for a live holder.
   */
  async claimMany(claims: readonly Claim[]): Promise<Map<string, ClaimStatus>> {
    const out = new Map<string, ClaimStatus>();
    if (claims.length === 0) return out;
    const replies = await sendGrouped(this.#redis, claims, REQUESTS_PER_CALL, {
      one: 'pushlineLedgerClaim',
      many: 'pushlineLedgerClaimMany',
      keys: (c) => [c.key, c.outcomeKey],
      shared: [this.#options.claimTtlMs],
      args: (c) => [c.token],
    });
    const statuses = replies.flatMap((reply) => (Array.isArray(reply) ? (reply as unknown[]) : []));
    if (statuses.length !== claims.length) {
      throw new Error(`the claim script answered ${statuses.length} statuses for ${claims.length} requests`);
    }
    claims.forEach((c, i) => {
      const status = claimStatus(statuses[i]);
      if (status === 'claimed' || status === 'recorded') this.#held.set(c.key, c.token);
      out.set(c.key, status);
    });
    return out;
  }

  /**
   * Claims one request. While another holder works on it (another processor after a rebalance, or
   * an earlier record of the same id), waits until that holder completes (`done`) or its claim
   * expires (then claims it), until `signal` aborts.
   */
  async claim(claim: Claim, signal: AbortSignal): Promise<'claimed' | 'recorded' | 'done'> {
    let waited = false;
    for (let attempt = 0; ; attempt++) {
      const [reply] = (await this.#redis.pushlineLedgerClaim(
        claim.key,
        claim.outcomeKey,
        this.#options.claimTtlMs,
        claim.token,
      )) as unknown[];
      const status = claimStatus(reply);
      if (status === 'claimed' || status === 'recorded') {
        this.#held.set(claim.key, claim.token);
        return status;
      }
      if (status === 'done') return 'done';
      if (signal.aborted) throw new ClaimAbandonedError(claim.requestId);
      if (!waited) {
        waited = true;
        this.#options.onWait?.();
        this.#options.logger.info(
          { requestId: claim.requestId, key: claim.key },
          'request held by another holder; waiting',
        );
      }
      // The holder completes or its claim expires; neither sends us an event, so look again.
      try {
        await sleep(Math.min(500, 25 * 2 ** attempt), undefined, { signal });
      } catch {
        throw new ClaimAbandonedError(claim.requestId);
      }
    }
  }

  /**
   * Records many requests' outcomes before they are published, in one round trip: a holder that
   * takes a request over after this one died publishes what the log lacks of them instead of
   * handling the request again (`recorded`). `at` bounds when the events can have been written.
   */
  async recordOutcomes(
    entries: readonly {
      readonly claim: Claim;
      /** The events, each serialized as it is produced (one JSON object per event). */
      readonly serialized: readonly string[];
    }[],
    at: number,
  ): Promise<void> {
    if (entries.length === 0) return;
    await sendGrouped(this.#redis, entries, REQUESTS_PER_CALL, {
      one: 'pushlineLedgerRecord',
      many: 'pushlineLedgerRecordMany',
      keys: ({ claim }) => [claim.outcomeKey],
      shared: [this.#options.windowSeconds],
      // A `RecordedOutcome`, joined from the strings Kafka gets rather than serialized again.
      args: ({ serialized }) => [`{"at":${at},"events":[${serialized.join(',')}]}`],
    });
  }

  /**
   * The outcome an earlier holder recorded (status `recorded`); undefined when there is none, or
   * it is unreadable (logged): the request is then handled again, as before outcomes were recorded.
   */
  async recordedOutcome(claim: Claim): Promise<RecordedOutcome | undefined> {
    const raw = await this.#redis.get(claim.outcomeKey);
    if (raw === null) return undefined;
    try {
      return RecordedOutcome.parse(JSON.parse(raw));
    } catch (err) {
      this.#options.logger.error(
        { err, requestId: claim.requestId, key: claim.outcomeKey },
        'a recorded outcome is unreadable; the request is handled again',
      );
      return undefined;
    }
  }

  /** Marks many requests done once their events are published, in one round trip. */
  async completeMany(claims: readonly Claim[]): Promise<void> {
    if (claims.length === 0) return;
    await sendGrouped(this.#redis, claims, REQUESTS_PER_CALL, {
      one: 'pushlineLedgerComplete',
      many: 'pushlineLedgerCompleteMany',
      // No sent mark (no ttl): the third key repeats one the script deletes anyway.
      keys: (c) => [c.key, c.outcomeKey, c.sentKey ?? c.outcomeKey],
      shared: [this.#options.windowSeconds],
    });
    for (const c of claims) if (this.#held.get(c.key) === c.token) this.#held.delete(c.key);
  }

  /** Gives claims up (a record left to the next owner, or dead-lettered), in one round trip. */
  async releaseMany(claims: readonly Claim[]): Promise<void> {
    if (claims.length === 0) return;
    for (const c of claims) if (this.#held.get(c.key) === c.token) this.#held.delete(c.key);
    await sendAll(
      this.#redis,
      claims.map((c): BatchCall => ['pushlineLedgerRelease', c.key, c.token]),
    );
  }

  /** Stops renewing a claim without touching Redis (it expires after the TTL). */
  forget(claim: Claim): void {
    if (this.#held.get(claim.key) === claim.token) this.#held.delete(claim.key);
  }

  async #renew(): Promise<void> {
    const held = [...this.#held];
    if (held.length === 0) return;
    try {
      const replies = await sendAll(
        this.#redis,
        held.map(([key, token]): BatchCall => ['pushlineLedgerRenew', key, token, this.#options.claimTtlMs]),
      );
      held.forEach(([key, token], i) => {
        if (replies[i] === 1 || this.#held.get(key) !== token) return;
        // Gone: expired while Redis could not be reached, or taken over. The record re-claims
        // (with the same token) before it does anything more.
        this.#held.delete(key);
        this.#options.onLost?.();
        this.#options.logger.warn({ key }, 'a held request claim was gone at renewal');
      });
    } catch (err) {
      this.#options.onRenewFailure?.(err);
      this.#options.logger.warn(
        { err, claims: held.length },
        'renewing request claims failed; retried at the next round',
      );
    }
  }
}

function claimStatus(reply: unknown): ClaimStatus {
  switch (reply) {
    case 1:
      return 'claimed';
    case 3:
      return 'recorded';
    case 2:
      return 'done';
    default:
      return 'held';
  }
}
