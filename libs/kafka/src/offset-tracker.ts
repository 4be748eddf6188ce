/** What a partition's handed-over records look like now, for progress metrics and readiness. */
export interface TrackedProgress {
  /** Records handed to the handler and not finished. */
  readonly unfinished: number;
  /** The lowest unfinished offset, when there is one: what the committed offset waits for. */
  readonly oldestUnfinishedOffset: string | undefined;
  /** When that record was handed over (ms since epoch). */
  readonly oldestUnfinishedSince: number | undefined;
}

/**
 * The unfinished records of one partition that were handed to a handler, and the offset after the
 * last one handed over. Records finish in any order; the offset to commit is the lowest one not
 * finished yet, or the end of what was handed over when all are, so a crash never skips an
 * unfinished record, whatever finished after it. Only unfinished offsets are held: memory follows
 * the work in hand, not how far the partition got past a slow record.
 */
export class OffsetTracker {
  /** Unfinished offsets → when handed over. Insertion order is offset order (handed over in order). */
  readonly #unfinished = new Map<string, number>();
  #end: bigint | undefined;

  /** Records handed over and not finished. */
  get unfinished(): number {
    return this.#unfinished.size;
  }

  /**
   * The offset to commit: the lowest unfinished one, else the offset after the last record handed
   * over; undefined before anything was handed over.
   */
  get committable(): string | undefined {
    for (const offset of this.#unfinished.keys()) return offset;
    return this.#end?.toString();
  }

  /**
   * Hands records over: the offsets still to finish (ascending; none when the records finished as
   * they were taken) and the offset after the last record taken. Offsets below the end of what was
   * handed over before are already accounted for and skipped, so the order of the unfinished
   * offsets always is offset order.
   */
  take(unfinished: readonly string[], nextOffset: string, now = Date.now()): void {
    const end = this.#end;
    for (const offset of unfinished) {
      if (end !== undefined && BigInt(offset) < end) continue;
      this.#unfinished.set(offset, now);
    }
    const next = BigInt(nextOffset);
    if (end === undefined || next > end) this.#end = next;
  }

  /**
   * Marks a record finished. Returns the new committable offset when it moved (the record was the
   * lowest unfinished one), else undefined. Finishing twice, or an offset not in hand, is a no-op.
   */
  finish(offset: string): string | undefined {
    const wasFirst = this.#firstOffset() === offset;
    if (!this.#unfinished.delete(offset) || !wasFirst) return undefined;
    return this.committable;
  }

  progress(): TrackedProgress {
    for (const [offset, since] of this.#unfinished) {
      return {
        unfinished: this.#unfinished.size,
        oldestUnfinishedOffset: offset,
        oldestUnfinishedSince: since,
      };
    }
    return { unfinished: 0, oldestUnfinishedOffset: undefined, oldestUnfinishedSince: undefined };
  }

  #firstOffset(): string | undefined {
    for (const offset of this.#unfinished.keys()) return offset;
    return undefined;
  }
}
