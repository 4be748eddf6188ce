export interface MicroBatcherOptions<T> {
  /**
   * Handles one batch, its items in the order they were added. Never runs twice at once: items
   * added while a batch runs (or while a synchronous flush writes) go into a later batch.
   */
  readonly flush: (batch: T[]) => void | Promise<void>;
  /**
   * Told when `flush` throws or rejects, with the batch it had; the batcher goes on with the next
   * batch. Items carrying their own promises settle them here. It must not throw.
   */
  readonly onError: (err: unknown, batch: readonly T[]) => void;
  /** Most items in one batch; a full batch goes at once. Default: no cap. */
  readonly maxBatch?: number;
  /**
   * How long the oldest item waits for others before its batch goes. 0: until the next turn of
   * the event loop (`setImmediate`), so everything added in the same turn goes together. Default 0.
   */
  readonly lingerMs?: number;
  /** Items held at most; one more drops the oldest, handed to `onDrop`. Default: no bound. */
  readonly maxQueued?: number;
  readonly onDrop?: (item: T) => void;
}

/**
 * The platform's one micro-batcher (a group commit). Items added in the same turn (or within
 * `lingerMs`) go to `flush` as one batch of at most `maxBatch`; one batch runs at a time, and what
 * arrives meanwhile waits for the next, which starts as soon as the running one ends if its oldest
 * item has waited its linger (or a full batch waits), else when it has. `close()` flushes what is
 * queued and refuses more; it is as bounded as `flush` is.
 */
export class MicroBatcher<T> {
  readonly #flush: (batch: T[]) => void | Promise<void>;
  readonly #onError: (err: unknown, batch: readonly T[]) => void;
  readonly #maxBatch: number;
  readonly #lingerMs: number;
  readonly #maxQueued: number;
  readonly #onDrop: ((item: T) => void) | undefined;
  #queue: T[] = [];
  /** When the oldest queued item arrived (`performance.now()`), or earlier: never later. */
  #oldestAt = 0;
  #timer: { readonly cancel: () => void } | undefined;
  /** A batch is being flushed (synchronously, or `#flushing` holds its promise). */
  #running = false;
  #flushing: Promise<void> | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(options: MicroBatcherOptions<T>) {
    const maxBatch = options.maxBatch ?? Infinity;
    const lingerMs = options.lingerMs ?? 0;
    const maxQueued = options.maxQueued ?? Infinity;
    if (!(maxBatch >= 1) || !(lingerMs >= 0) || !(maxQueued >= 1))
      throw new RangeError(
        `a micro-batcher needs maxBatch >= 1, lingerMs >= 0 and maxQueued >= 1, got ${maxBatch}/${lingerMs}/${maxQueued}`,
      );
    this.#flush = options.flush;
    this.#onError = options.onError;
    this.#maxBatch = maxBatch;
    this.#lingerMs = lingerMs;
    this.#maxQueued = maxQueued;
    this.#onDrop = options.onDrop;
  }

  /** Items waiting for a batch (not those of the batch running). */
  get queued(): number {
    return this.#queue.length;
  }

  /** Nothing waits and no batch runs. */
  get idle(): boolean {
    return this.#queue.length === 0 && !this.#running;
  }

  /** Queues an item for a coming batch. False once closed: the item was not taken. */
  add(item: T): boolean {
    if (this.#closed) return false;
    if (this.#queue.length >= this.#maxQueued) this.#onDrop?.(this.#queue.shift() as T);
    if (this.#queue.length === 0) this.#oldestAt = performance.now();
    this.#queue.push(item);
    if (this.#running) return true;
    if (this.#queue.length >= this.#maxBatch) this.#run();
    else this.#schedule();
    return true;
  }

  /**
   * Sends what is queued without waiting out the linger, and resolves once everything added
   * before the call has been through `flush`.
   */
  async flush(): Promise<void> {
    while (this.#queue.length > 0 || this.#running) {
      if (!this.#running) this.#run(true);
      // Undefined during a synchronous flush, which is over by the next microtask.
      await this.#flushing;
    }
  }

  /** Refuses new items, flushes what is queued, and resolves when the last batch ended. Idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    return (this.#closing ??= this.flush());
  }

  #schedule(): void {
    if (this.#timer || this.#running || this.#queue.length === 0) return;
    const run = () => {
      this.#timer = undefined;
      this.#run();
    };
    if (this.#lingerMs === 0) {
      const immediate = setImmediate(run);
      this.#timer = { cancel: () => clearImmediate(immediate) };
    } else {
      const wait = Math.max(0, this.#oldestAt + this.#lingerMs - performance.now());
      const timer = setTimeout(run, wait);
      this.#timer = { cancel: () => clearTimeout(timer) };
    }
  }

  /** Flushes batches while one is due; `force` sends the first even when it is not. */
  #run(force = false): void {
    this.#timer?.cancel();
    this.#timer = undefined;
    if (this.#running) return;
    this.#running = true;
    let pending = false;
    try {
      while (this.#queue.length > 0 && (force || this.#due())) {
        force = false;
        const batch = this.#take();
        let result: void | Promise<void>;
        try {
          result = this.#flush(batch);
        } catch (err) {
          this.#onError(err, batch);
          continue;
        }
        if (result instanceof Promise) {
          pending = true;
          this.#flushing = result.then(
            () => this.#ran(),
            (err: unknown) => {
              try {
                this.#onError(err, batch);
              } finally {
                this.#ran();
              }
            },
          );
          return;
        }
      }
    } finally {
      if (!pending) this.#running = false;
    }
    this.#schedule();
  }

  /** The oldest items, at most a batch of them; the rest keep their (earlier) `#oldestAt`. */
  #take(): T[] {
    if (this.#queue.length <= this.#maxBatch) {
      const batch = this.#queue;
      this.#queue = [];
      return batch;
    }
    const batch = this.#queue.slice(0, this.#maxBatch);
    this.#queue = this.#queue.slice(this.#maxBatch);
    return batch;
  }

  /** An asynchronous batch ended: the next one goes now if it is due, else when it is. */
  #ran(): void {
    this.#running = false;
    this.#flushing = undefined;
    if (this.#due()) this.#run();
    else this.#schedule();
  }

  /** A full batch waits, or the oldest item has lingered its time (or longer: closing). */
  #due(): boolean {
    if (this.#queue.length === 0) return false;
    return (
      this.#closed ||
      this.#queue.length >= this.#maxBatch ||
      performance.now() >= this.#oldestAt + this.#lingerMs
    );
  }
}
