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
  readonly #o: OffsetCommitterOptions;
  readonly #pending = new Map<string, Pending>();
  readonly #settledWaiters: (() => void)[] = [];
  #immediate: NodeJS.Immediate | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #inFlight = false;

  constructor(options: OffsetCommitterOptions) {
    this.#o = options;
  }

  /** Records that everything before `offset` is done; it is committed soon after. */
  add(topic: string, partition: number, offset: string, generation: number): void {
    const key = pendingKey(topic, partition);
    const before = this.#pending.get(key);
    if (before && before.generation === generation && BigInt(before.offset) >= BigInt(offset)) return;
    this.#pending.set(key, { topic, partition, offset, generation, attempts: 0 });
    this.#schedule();
  }

  /** Resolves once everything added so far is committed, or dropped after its last attempt. */
  async flush(): Promise<void> {
    while (this.#inFlight || this.#pending.size > 0) {
      // Waiting out a retry backoff is fine: attempts are bounded.
      if (!this.#inFlight && !this.#retryTimer) this.#schedule();
      await new Promise<void>((resolve) => this.#settledWaiters.push(resolve));
    }
  }

  /** Drops everything pending and stops retrying. */
  clear(): void {
    clearImmediate(this.#immediate);
    clearTimeout(this.#retryTimer);
    this.#immediate = undefined;
    this.#retryTimer = undefined;
    this.#pending.clear();
    this.#settled();
  }

  #schedule(): void {
    if (this.#immediate || this.#retryTimer || this.#inFlight || this.#pending.size === 0) return;
    // setImmediate, not a microtask: the client swaps its group generation in one synchronous
    // stretch before announcing the new membership, and no commit may start in between.
    this.#immediate = setImmediate(() => {
      this.#immediate = undefined;
      void this.#send();
    });
  }

  async #send(): Promise<void> {
    const batch: Pending[] = [];
    for (const p of this.#pending.values()) if (this.#o.isCurrent(p.generation)) batch.push(p);
    this.#pending.clear();
    if (batch.length === 0) {
      this.#settled();
      return;
    }
    this.#inFlight = true;
    let failedAttempts = 0;
    try {
      await this.#o.commit(batch);
    } catch (err) {
      failedAttempts = this.#requeue(batch, err);
    } finally {
      this.#inFlight = false;
    }
    if (failedAttempts > 0 && this.#pending.size > 0) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined;
        void this.#send();
      }, backoffMs(failedAttempts));
    } else {
      this.#schedule();
    }
    this.#settled();
  }

  /** Puts a failed commit back unless superseded, stale or out of attempts; returns the attempts so far. */
  #requeue(batch: readonly Pending[], err: unknown): number {
    const maxAttempts = this.#o.maxAttempts ?? 5;
    let attempts = 0;
    const retried: number[] = [];
    for (const p of batch) {
      const key = pendingKey(p.topic, p.partition);
      if (this.#pending.has(key) || !this.#o.isCurrent(p.generation) || p.attempts + 1 >= maxAttempts)
        continue;
      this.#pending.set(key, { ...p, attempts: p.attempts + 1 });
      attempts = Math.max(attempts, p.attempts + 1);
      retried.push(p.partition);
    }
    this.#o.logger.warn(
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
