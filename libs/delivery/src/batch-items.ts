import type { DeliverResult } from '@pushline/protocol';

interface Slot {
  resolve: (result: DeliverResult) => void;
  reject: (err: unknown) => void;
}

/**
 * The items of one batch delivery, each with its own promise, settled one by one as their
 * outcomes become known (a streamed line, a deadline, a fallback request) and at most once.
 */
export class BatchItems {
  readonly promises: Promise<DeliverResult>[];
  readonly #slots: (Slot | undefined)[];
  #open: number;

  constructor(size: number) {
    const slots: Slot[] = [];
    this.promises = Array.from(
      { length: size },
      () =>
        new Promise<DeliverResult>((resolve, reject) => {
          slots.push({ resolve, reject });
        }),
    );
    this.#slots = slots;
    this.#open = size;
  }

  get size(): number {
    return this.#slots.length;
  }

  /** Items without an outcome yet. */
  get open(): number {
    return this.#open;
  }

  isOpen(index: number): boolean {
    return this.#slots[index] !== undefined;
  }

  /** Settles item `index` with `result`; false when it had settled already. */
  resolve(index: number, result: DeliverResult): boolean {
    const slot = this.#take(index);
    slot?.resolve(result);
    return slot !== undefined;
  }

  reject(index: number, err: unknown): boolean {
    const slot = this.#take(index);
    slot?.reject(err);
    return slot !== undefined;
  }

  /** Settles every open item with the result `make` gives for it. */
  resolveRest(make: (index: number) => DeliverResult): void {
    this.#slots.forEach((_, i) => {
      if (this.isOpen(i)) this.resolve(i, make(i));
    });
  }

  rejectRest(err: unknown): void {
    this.#slots.forEach((_, i) => this.reject(i, err));
  }

  #take(index: number): Slot | undefined {
    const slot = this.#slots[index];
    if (!slot) return undefined;
    this.#slots[index] = undefined;
    this.#open--;
    return slot;
  }
}
