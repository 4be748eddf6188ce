/**
 * Message ids seen recently, across connections, each with the answer its message got (or will
 * get: a promise while the handler runs). A redelivered id gets the same answer without reaching
 * the app again. Bounded: past `capacity` the oldest id is forgotten.
 */
export class DedupeWindow<T> {
  readonly #capacity: number;
  readonly #answers = new Map<string, T>();

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('dedupe window must be ≥ 1');
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#answers.size;
  }

  get(id: string): T | undefined {
    return this.#answers.get(id);
  }

  remember(id: string, answer: T): void {
    this.#answers.delete(id);
    this.#answers.set(id, answer);
    while (this.#answers.size > this.#capacity) {
      const oldest = this.#answers.keys().next();
      if (oldest.done) break;
      this.#answers.delete(oldest.value);
    }
  }
}
