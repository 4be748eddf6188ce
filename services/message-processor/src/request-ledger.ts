import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from '@pushline/telemetry';

/** The request's batch was revoked or the processor is closing while it waited for another holder. */
export class ClaimAbandonedError extends Error {
  override readonly name = 'ClaimAbandonedError';
  readonly requestId: string;
  constructor(requestId: string) {
    super(`stopped waiting for request ${requestId}: the batch is no longer ours`);
    this.requestId = requestId;
  }
}

export interface RequestLedgerOptions {
  /** A connected ioredis client; not owned. */
  readonly redis: Redis;
  readonly keyPrefix: string;
  readonly instanceId: string;
  /** How long a claim lives without completing; a holder that dies frees the request after it. */
  readonly claimTtlMs: number;
  /** How long a completed request id is remembered. */
  readonly windowSeconds: number;
  readonly logger: Logger;
  /** Called when a request is held by someone else and this caller waits for it. */
  readonly onWait?: () => void;
}

export type ClaimResult =
  /** This caller now holds the request and must `complete` or `release` it. */
  | { readonly status: 'claimed'; readonly token: string }
  /** The request already has its outcome recorded: skip it. */
  | { readonly status: 'done' };

const DONE = 'done';

// Compare-and-delete: only the holder's own claim is dropped, never a newer holder's or `done`.
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

type LedgerRedis = Redis & { pushlineLedgerRelease(key: string, token: string): Promise<number> };

/**
 * Processor-level idempotency by request id, in Redis at `<P>req:<id>`:
 *   absent                 never seen (or forgotten after the window)
 *   `proc:<instance>:<n>`  being processed, expires after `claimTtlMs` (PX) if its holder dies
 *   `done`                 outcome recorded, remembered `windowSeconds` (EX)
 * A record redelivered by Kafka (restart, rebalance, a failed batch) finds `done` and is skipped,
 * so it does not produce a second terminal outcome. The only window left is a crash between the
 * outcome reaching Kafka and `complete` (docs/protocol.md, "Delivery guarantees").
 */
export class RequestLedger {
  readonly #redis: LedgerRedis;
  readonly #o: RequestLedgerOptions;

  constructor(options: RequestLedgerOptions) {
    const redis = options.redis;
    if (!('pushlineLedgerRelease' in redis)) {
      redis.defineCommand('pushlineLedgerRelease', { numberOfKeys: 1, lua: RELEASE });
    }
    this.#redis = redis as LedgerRedis;
    this.#o = options;
  }

  #key(id: string): string {
    return `${this.#o.keyPrefix}req:${id}`;
  }

  /**
   * Claims a request for processing. When another holder (another processor after a rebalance,
   * or a duplicate record in the same batch) is processing it, waits until that holder completes
   * (`done`) or its claim expires (then claims it), while `isActive` holds.
   */
  async claim(requestId: string, isActive: () => boolean = () => true): Promise<ClaimResult> {
    const key = this.#key(requestId);
    const token = `proc:${this.#o.instanceId}:${randomUUID()}`;
    let waited = false;
    for (let attempt = 0; ; attempt++) {
      const set = await this.#redis.set(key, token, 'PX', this.#o.claimTtlMs, 'NX');
      if (set === 'OK') return { status: 'claimed', token };
      const current = await this.#redis.get(key);
      if (current === DONE) return { status: 'done' };
      if (current === null) continue;
      if (!isActive()) throw new ClaimAbandonedError(requestId);
      if (!waited) {
        waited = true;
        this.#o.onWait?.();
        this.#o.logger.info({ requestId, holder: current }, 'request held by another processor; waiting');
      }
      // The holder completes or its claim expires; neither sends us an event, so look again.
      await new Promise((resolve) => setTimeout(resolve, Math.min(500, 25 * 2 ** attempt)));
    }
  }

  /**
   * Claims many requests in one round trip (a pipeline of `SET NX PX`). A request this call could
   * not take comes back as `held` (someone holds it, or it is `done`): settle it with `claim`,
   * which tells the two apart and waits for a live holder. Ids must be distinct.
   */
  async claimMany(
    requestIds: readonly string[],
  ): Promise<
    Map<string, { readonly status: 'claimed'; readonly token: string } | { readonly status: 'held' }>
  > {
    const out = new Map<
      string,
      { readonly status: 'claimed'; readonly token: string } | { readonly status: 'held' }
    >();
    if (requestIds.length === 0) return out;
    const tokens = requestIds.map(() => `proc:${this.#o.instanceId}:${randomUUID()}`);
    const pipe = this.#redis.pipeline();
    requestIds.forEach((id, i) =>
      pipe.set(this.#key(id), tokens[i] as string, 'PX', this.#o.claimTtlMs, 'NX'),
    );
    const replies = await execPipeline(pipe);
    requestIds.forEach((id, i) => {
      out.set(
        id,
        replies[i] === 'OK' ? { status: 'claimed', token: tokens[i] as string } : { status: 'held' },
      );
    });
    return out;
  }

  /** Marks many requests' outcomes as recorded, in one round trip. */
  async completeMany(requestIds: readonly string[]): Promise<void> {
    if (requestIds.length === 0) return;
    const pipe = this.#redis.pipeline();
    for (const id of requestIds) pipe.set(this.#key(id), DONE, 'EX', this.#o.windowSeconds);
    await execPipeline(pipe);
  }

  /** `release` for many claims, in one round trip. */
  async releaseMany(
    claims: readonly { readonly requestId: string; readonly token: string }[],
  ): Promise<void> {
    if (claims.length === 0) return;
    const pipe = this.#redis.pipeline() as ReturnType<Redis['pipeline']> & {
      pushlineLedgerRelease(key: string, token: string): unknown;
    };
    for (const c of claims) pipe.pushlineLedgerRelease(this.#key(c.requestId), c.token);
    await execPipeline(pipe);
  }

  /** Marks the request's outcome as recorded. */
  async complete(requestId: string): Promise<void> {
    await this.#redis.set(this.#key(requestId), DONE, 'EX', this.#o.windowSeconds);
  }

  /** Gives the request up after a failure, so its redelivery is processed at once. */
  async release(requestId: string, token: string): Promise<void> {
    await this.#redis.pushlineLedgerRelease(this.#key(requestId), token);
  }
}

/** Runs a pipeline and throws the first command error (ioredis reports them per command). */
async function execPipeline(pipe: ReturnType<Redis['pipeline']>): Promise<unknown[]> {
  const results = (await pipe.exec()) ?? [];
  return results.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}
