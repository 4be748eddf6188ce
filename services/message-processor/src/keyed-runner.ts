/** Counting semaphore: bounds how much work runs at once across every batch of a processor. */
export class Semaphore {
  readonly #permits: number;
  #inUse = 0;
  readonly #waiters: (() => void)[] = [];

  constructor(permits: number) {
    if (!Number.isInteger(permits) || permits < 1)
      throw new RangeError(`permits must be ≥ 1, got ${permits}`);
    this.#permits = permits;
  }

  get inUse(): number {
    return this.#inUse;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  /** Resolves with a release function once a permit is free; call it exactly once. */
  async acquire(): Promise<() => void> {
    if (this.#inUse < this.#permits) this.#inUse++;
    else await new Promise<void>((resolve) => this.#waiters.push(resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      // The permit passes straight to the next waiter, so `inUse` stays accurate.
      if (next) next();
      else this.#inUse--;
    };
  }
}

/**
 * Per-key chains of work that outlive any one batch: `enqueue` runs its task after every task
 * enqueued before it under the same key has settled, and at once when the key has nothing running.
 * Different keys never wait for each other. So records of one device run in offset order however
 * their batches arrive, while a device that never acks holds up only its own later records.
 */
export class KeyedChains {
  /** The last task enqueued per key, while it (or one before it) has not settled. */
  readonly #tails = new Map<string, Promise<void>>();

  /** Keys with a task running or waiting. */
  get keys(): number {
    return this.#tails.size;
  }

  /**
   * Runs `task` once the previous task of `key` settled (whether it resolved or rejected: the task
   * decides whether to go on, e.g. by looking at an abort signal). Resolves or rejects as `task` does.
   */
  enqueue(key: string, task: () => Promise<void>): Promise<void> {
    const previous = this.#tails.get(key);
    const next = previous ? previous.then(task, task) : task();
    this.#tails.set(key, next);
    const forget = () => {
      if (this.#tails.get(key) === next) this.#tails.delete(key);
    };
    next.then(forget, forget);
    return next;
  }
}
