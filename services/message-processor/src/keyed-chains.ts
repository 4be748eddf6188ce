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
