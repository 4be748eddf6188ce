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
