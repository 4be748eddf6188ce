import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';

export interface PartitionOffset {
  readonly topic: string;
  readonly partition: number;
  /** The next record to read (Kafka's committed-offset convention). */
  readonly offset: string;
}

export interface OffsetCommitterOptions {
  /**
   * Sends one commit request. Called synchronously right after `isCurrent` said yes for every
   * offset in it, so the client's group generation cannot change in between.
   */
  readonly commit: (offsets: readonly PartitionOffset[]) => Promise<void>;
  /** False once the generation the offset was finished in has ended (rebalance, crash). */
  readonly isCurrent: (generation: number) => boolean;
  readonly logger: Logger;
  /** Sends of one offset before it is left to the partition's next commit. Default 5. */
  readonly maxAttempts?: number;
  /**
   * How long a finished offset waits for others to share its request. 0 sends in the next
   * event-loop turn. Default 0.
   */
  readonly lingerMs?: number;
}

interface Pending extends PartitionOffset {
  readonly generation: number;
  readonly attempts: number;
}

/**
 * Commits finished offsets in the background, one request at a time for every partition that
 * finished something meanwhile (a group commit), so committing costs one round trip per burst,
 * not one per batch. Offsets only move forward per partition, and an offset from an ended
 * generation is dropped instead of sent: a revoked partition's late result can never move the
 * new owner's position (the broker accepts a commit for any partition from a current member).
 */
export class OffsetCommitter {
  readonly #options: OffsetCommitterOptions;
  readonly #pending = new Map<string, Pending>();
  readonly #settledWaiters: (() => void)[] = [];
  /** A send already scheduled (linger, next turn, or a retry after a failure). */
  #timer: { readonly cancel: () => void } | undefined;
  #inFlight = false;

  constructor(options: OffsetCommitterOptions) {
    this.#options = options;
  }

  /** Records that everything before `offset` is done; it is committed soon after. */
  add(topic: string, partition: number, offset: string, generation: number): void {
    const key = pendingKey(topic, partition);
    const before = this.#pending.get(key);
    if (before && before.generation === generation && BigInt(before.offset) >= BigInt(offset)) return;
    this.#pending.set(key, { topic, partition, offset, generation, attempts: 0 });
    this.#schedule();
  }

  /**
   * Sends what is pending now, without waiting out the linger or a retry backoff, and resolves
   * once everything added so far is committed or dropped after its last attempt.
   */
  async flush(): Promise<void> {
    while (this.#inFlight || this.#pending.size > 0) {
      // Waiting first: a send with only stale offsets settles synchronously, and a waiter added
      // after it would never be woken.
      const settled = new Promise<void>((resolve) => this.#settledWaiters.push(resolve));
      if (!this.#inFlight) {
        this.#cancelTimer();
        void this.#send();
      }
      await settled;
    }
  }

  /** Drops everything pending and stops retrying. */
  clear(): void {
    this.#cancelTimer();
    this.#pending.clear();
    this.#settled();
  }

  #schedule(delayMs = this.#options.lingerMs ?? 0): void {
    if (this.#timer || this.#inFlight || this.#pending.size === 0) return;
    const run = () => {
      this.#timer = undefined;
      void this.#send();
    };
    // A macrotask, never a microtask: the client swaps its group generation in one synchronous
    // stretch before announcing the new membership, and no commit may start in between.
    if (delayMs > 0) {
      const timer = setTimeout(run, delayMs);
      this.#timer = { cancel: () => clearTimeout(timer) };
    } else {
      const immediate = setImmediate(run);
      this.#timer = { cancel: () => clearImmediate(immediate) };
    }
  }

  #cancelTimer(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
  }

  async #send(): Promise<void> {
    const batch: Pending[] = [];
    for (const p of this.#pending.values()) if (this.#options.isCurrent(p.generation)) batch.push(p);
    this.#pending.clear();
    if (batch.length === 0) {
      this.#settled();
      return;
    }
    this.#inFlight = true;
    let failedAttempts = 0;
    try {
      await this.#options.commit(batch);
    } catch (err) {
      failedAttempts = this.#requeue(batch, err);
    } finally {
      this.#inFlight = false;
    }
    this.#schedule(failedAttempts > 0 ? backoffMs(failedAttempts) : undefined);
    this.#settled();
  }

  /** Puts a failed commit back unless superseded, stale or out of attempts; returns the attempts so far. */
  #requeue(batch: readonly Pending[], err: unknown): number {
    const maxAttempts = this.#options.maxAttempts ?? 5;
    let attempts = 0;
    const retried: number[] = [];
    for (const p of batch) {
      const key = pendingKey(p.topic, p.partition);
      if (this.#pending.has(key) || !this.#options.isCurrent(p.generation) || p.attempts + 1 >= maxAttempts)
        continue;
      this.#pending.set(key, { ...p, attempts: p.attempts + 1 });
      attempts = Math.max(attempts, p.attempts + 1);
      retried.push(p.partition);
    }
    this.#options.logger.warn(
      { err, partitions: batch.map((p) => p.partition), retried },
      retried.length > 0
        ? 'committing offsets failed; retrying'
        : 'committing offsets failed; left to the next commit or the next owner (records may be redelivered)',
    );
    return Math.max(1, attempts);
  }

  #settled(): void {
    for (const wake of this.#settledWaiters.splice(0)) wake();
  }
}

function pendingKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
