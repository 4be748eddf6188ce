import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import type { BatchContext, IncomingRecord, RecordBatch } from './types.ts';

/** One fetch's records of one partition, as the client handed them over. */
export interface FetchedBatch {
  readonly topic: string;
  readonly partition: number;
  readonly records: readonly IncomingRecord[];
  /** The offset after the batch (what committing it stores: the next record to read). */
  readonly nextOffset: string;
  /** Records behind the end of the partition after this batch. */
  readonly lag: number;
}

/** What the pipeline asks of the Kafka client it sits on. */
export interface PipelineHost {
  /** Stop fetching the partition (its queue is full, or it is backing off after a failure). */
  pause(topic: string, partition: number): void;
  resume(topic: string, partition: number): void;
  /** Fetch the partition from `offset` again (the first record of a failed batch). */
  seek(topic: string, partition: number, offset: string): void;
  /** Work up to `nextOffset` is done: called in offset order per partition, never for a failed batch. */
  done(topic: string, partition: number, nextOffset: string, generation: number): void;
  /** Keeps the group membership alive. */
  heartbeat(): Promise<void>;
}

export interface PartitionPipelineOptions {
  readonly handleBatch: (batch: RecordBatch, ctx: BatchContext) => Promise<void>;
  readonly host: PipelineHost;
  readonly logger: Logger;
  /** Batches queued per partition while its handler runs before the partition is paused. */
  readonly maxQueuedBatches: number;
  /** Partitions whose handler runs at once. */
  readonly maxConcurrentPartitions: number;
  /** Delay before a failed batch is fetched again, by consecutive failure (1, 2, …). Default `backoffMs`. */
  readonly retryDelayMs?: (attempt: number) => number;
}

interface QueuedBatch extends FetchedBatch {
  readonly generation: number;
}

/** The work of one partition: its queue, and whether a handler of it is running. */
interface Lane {
  readonly topic: string;
  readonly partition: number;
  queue: QueuedBatch[];
  running: boolean;
  /** Paused because the queue reached its bound; resumed when the handler takes the queue. */
  pausedForQueue: boolean;
  /** Set while a failed batch waits to be fetched again; batches handed over meanwhile are dropped. */
  retryTimer: NodeJS.Timeout | undefined;
  failures: number;
}

/**
 * Decouples handling from fetching. The client hands each fetched batch to `push` and goes on
 * fetching; every partition has a queue that one runner works through strictly in offset order
 * (keys map to partitions, so per-key order holds), taking everything queued at once as one
 * batch. So a slow partition delays only its own records, never another partition's fetch.
 *
 * A *generation* is one group membership: a rebalance ends it (`invalidate`), which drops the
 * queues, makes `isActive()` false for the handlers still running, and keeps their late results
 * from being reported as done (the next owner reads from the last commit).
 */
export class PartitionPipeline {
  readonly #o: PartitionPipelineOptions;
  readonly #log: Logger;
  readonly #lanes = new Map<string, Lane>();
  readonly #slotWaiters: (() => void)[] = [];
  readonly #idleWaiters: (() => void)[] = [];
  #slotsInUse = 0;
  #generation = 0;
  #closing = false;

  constructor(options: PartitionPipelineOptions) {
    if (!Number.isInteger(options.maxQueuedBatches) || options.maxQueuedBatches < 1)
      throw new RangeError(`maxQueuedBatches must be ≥ 1, got ${options.maxQueuedBatches}`);
    if (!(options.maxConcurrentPartitions >= 1))
      throw new RangeError(`maxConcurrentPartitions must be ≥ 1, got ${options.maxConcurrentPartitions}`);
    this.#o = options;
    this.#log = options.logger;
  }

  get generation(): number {
    return this.#generation;
  }

  /** Partitions with a handler running now. */
  get running(): number {
    let n = 0;
    for (const lane of this.#lanes.values()) if (lane.running) n++;
    return n;
  }

  /**
   * False when a batch of this partition must not be taken now (closing, or the partition is
   * waiting to refetch a failed batch): the caller leaves it unresolved, so it is fetched again.
   */
  accepts(topic: string, partition: number): boolean {
    if (this.#closing) return false;
    return this.#lanes.get(laneKey(topic, partition))?.retryTimer === undefined;
  }

  /** Queues a fetched batch behind the partition's earlier ones. */
  push(batch: FetchedBatch): void {
    if (!this.accepts(batch.topic, batch.partition) || batch.records.length === 0) return;
    const lane = this.#lane(batch.topic, batch.partition);
    lane.queue.push({ ...batch, generation: this.#generation });
    if (lane.queue.length >= this.#o.maxQueuedBatches && !lane.pausedForQueue) {
      lane.pausedForQueue = true;
      this.#o.host.pause(lane.topic, lane.partition);
    }
    if (!lane.running)
      this.#run(lane).catch((err: unknown) => {
        // Only a throwing host gets here; the partition's next batch starts a runner again.
        this.#log.error({ err, topic: lane.topic, partition: lane.partition }, 'partition runner failed');
      });
  }

  /**
   * Ends the current generation (a rebalance started, or the client rejoined): queued batches
   * are dropped, running handlers see `isActive()` false and their results are not reported.
   * Pauses and retry timers are forgotten; the caller resumes the new assignment.
   */
  invalidate(): void {
    this.#generation++;
    for (const lane of this.#lanes.values()) {
      lane.queue = [];
      lane.pausedForQueue = false;
      clearTimeout(lane.retryTimer);
      lane.retryTimer = undefined;
      lane.failures = 0;
      if (!lane.running) this.#lanes.delete(laneKey(lane.topic, lane.partition));
    }
  }

  /**
   * Stops taking batches: queued ones are dropped (nobody started them; the next owner reads
   * them), running handlers see `isActive()` false. Resolves once none is running, after their
   * finished batches were reported done.
   */
  async drain(): Promise<void> {
    this.#closing = true;
    for (const lane of this.#lanes.values()) {
      lane.queue = [];
      clearTimeout(lane.retryTimer);
      lane.retryTimer = undefined;
    }
    // Runners waiting for a slot get one as running handlers end, find their queue empty and stop.
    while (this.running > 0) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  #lane(topic: string, partition: number): Lane {
    const key = laneKey(topic, partition);
    let lane = this.#lanes.get(key);
    if (!lane) {
      lane = {
        topic,
        partition,
        queue: [],
        running: false,
        pausedForQueue: false,
        retryTimer: undefined,
        failures: 0,
      };
      this.#lanes.set(key, lane);
    }
    return lane;
  }

  async #run(lane: Lane): Promise<void> {
    lane.running = true;
    try {
      while (lane.queue.length > 0 && !this.#closing) {
        // Taking a free slot synchronously starts the handler in the same turn as the push.
        if (!this.#tryAcquireSlot()) await this.#waitForSlot();
        try {
          // The queue may have been dropped while waiting for a slot.
          const taken = lane.queue;
          if (taken.length === 0 || this.#closing) break;
          lane.queue = [];
          if (lane.pausedForQueue) {
            lane.pausedForQueue = false;
            this.#o.host.resume(lane.topic, lane.partition);
          }
          await this.#handle(lane, taken);
        } finally {
          this.#releaseSlot();
        }
      }
    } finally {
      lane.running = false;
      if (this.running === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }

  async #handle(lane: Lane, taken: readonly QueuedBatch[]): Promise<void> {
    const first = taken[0] as QueuedBatch;
    const last = taken[taken.length - 1] as QueuedBatch;
    const { generation } = first;
    const records = taken.length === 1 ? first.records : taken.flatMap((b) => b.records);
    const isActive = () => !this.#closing && this.#generation === generation;
    const ctx: BatchContext = {
      heartbeat: () => (isActive() ? this.#o.host.heartbeat() : Promise.resolve()),
      isActive,
    };
    try {
      await this.#o.handleBatch(
        { topic: lane.topic, partition: lane.partition, records, lag: last.lag },
        ctx,
      );
    } catch (err) {
      this.#failed(lane, records[0] as IncomingRecord, generation, err);
      return;
    }
    lane.failures = 0;
    if (this.#generation === generation)
      this.#o.host.done(lane.topic, lane.partition, last.nextOffset, generation);
  }

  /**
   * A failed batch is not reported done. In the current generation the partition drops what it
   * fetched after the batch, is paused and sought back to the batch's first record, and fetched
   * again after a backoff; a stale or closing one is left to the next owner.
   */
  #failed(lane: Lane, first: IncomingRecord, generation: number, err: unknown): void {
    if (this.#closing || this.#generation !== generation) {
      this.#log.info(
        { err, topic: lane.topic, partition: lane.partition, offset: first.offset },
        'batch stopped after the partition was revoked or the consumer began closing; it is not committed',
      );
      return;
    }
    lane.failures++;
    lane.queue = [];
    lane.pausedForQueue = false;
    const delayMs = (this.#o.retryDelayMs ?? backoffMs)(lane.failures);
    this.#log.warn(
      {
        err,
        topic: lane.topic,
        partition: lane.partition,
        offset: first.offset,
        attempt: lane.failures,
        retryInMs: delayMs,
      },
      'batch failed; it is not committed and is fetched again after a backoff',
    );
    this.#o.host.pause(lane.topic, lane.partition);
    this.#o.host.seek(lane.topic, lane.partition, first.offset);
    lane.retryTimer = setTimeout(() => {
      lane.retryTimer = undefined;
      if (!this.#closing && this.#generation === generation) this.#o.host.resume(lane.topic, lane.partition);
    }, delayMs);
  }

  #tryAcquireSlot(): boolean {
    if (this.#slotsInUse >= this.#o.maxConcurrentPartitions) return false;
    this.#slotsInUse++;
    return true;
  }

  /** The releasing runner hands its slot over as it is, so nobody can take it in between. */
  #waitForSlot(): Promise<void> {
    return new Promise<void>((resolve) => this.#slotWaiters.push(resolve));
  }

  #releaseSlot(): void {
    const next = this.#slotWaiters.shift();
    if (next) next();
    else this.#slotsInUse--;
  }
}

function laneKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
