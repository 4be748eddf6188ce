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

export interface KeyedRunResult {
  /** Items whose `run` resolved. */
  readonly completed: number;
  /** Items never started, because `shouldContinue` turned false or an earlier item of the key failed. */
  readonly skipped: number;
  /** Errors thrown by `run`, in the order they happened. */
  readonly errors: readonly unknown[];
}

/**
 * Runs `run` for every item: items with the same key one after another in their original order,
 * different keys in parallel, at most as many at once as the semaphore allows. An item whose key
 * had a failure is not started (its order would break), and once `shouldContinue` is false or any
 * item failed, no new item starts anywhere; items already running finish. Resolves when nothing
 * is running any more.
 */
export async function runKeyed<T>(
  items: readonly T[],
  keyOf: (item: T) => string,
  run: (item: T) => Promise<void>,
  options: { readonly semaphore: Semaphore; readonly shouldContinue: () => boolean },
): Promise<KeyedRunResult> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    const group = groups.get(key);
    if (group) group.push(item);
    else groups.set(key, [item]);
  }
  let completed = 0;
  let skipped = 0;
  const errors: unknown[] = [];
  const mayStart = () => errors.length === 0 && options.shouldContinue();

  await Promise.all(
    [...groups.values()].map(async (group) => {
      for (let i = 0; i < group.length; i++) {
        if (!mayStart()) {
          skipped += group.length - i;
          return;
        }
        const release = await options.semaphore.acquire();
        try {
          // Waiting for a permit can take a while: look again before starting.
          if (!mayStart()) {
            skipped += group.length - i;
            return;
          }
          await run(group[i] as T);
          completed++;
        } catch (err) {
          errors.push(err);
          skipped += group.length - i - 1;
          return;
        } finally {
          release();
        }
      }
    }),
  );
  return { completed, skipped, errors };
}
