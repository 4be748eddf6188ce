import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import { OffsetTracker } from './offset-tracker.ts';
import type { BatchContext, IncomingRecord, PartitionProgress, RecordBatch, TakenBatch } from './types.ts';

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
  /** Fetch the partition from `offset` again (the first record of a failed batch, or the lowest unfinished one). */
  seek(topic: string, partition: number, offset: string): void;
  /**
   * Everything before `nextOffset` is finished: called each time the partition's lowest unfinished
   * offset moves forward, never past an unfinished record.
   */
  done(topic: string, partition: number, nextOffset: string, generation: number): void;
  /** Keeps the group membership alive. */
  heartbeat(): Promise<void>;
}

export interface PartitionPipelineOptions {
  readonly handleBatch: (batch: RecordBatch, ctx: BatchContext) => Promise<void> | Promise<TakenBatch>;
  readonly host: PipelineHost;
  readonly logger: Logger;
  /** Batches queued per partition while its handler runs before the partition is paused. */
  readonly maxQueuedBatches: number;
  /** Partitions whose handler runs (takes a batch) at once. */
  readonly maxConcurrentPartitions: number;
  /** Records of a partition handed over and unfinished before its next batch waits. Default 1000. */
  readonly maxUnfinishedPerPartition?: number;
  /** Delay before a failed batch is fetched again, by consecutive failure (1, 2, …). Default `backoffMs`. */
  readonly retryDelayMs?: (attempt: number) => number;
}

interface QueuedBatch extends FetchedBatch {
  readonly generation: number;
}

/** The work of one partition: its queue, whether a runner works on it, and what is in hand. */
interface Lane {
  readonly topic: string;
  readonly partition: number;
  queue: QueuedBatch[];
  running: boolean;
  /** When the handler started taking the batch it is taking now. */
  takingSince: number | undefined;
  /** Paused because the queue reached its bound; resumed when the handler takes the queue. */
  pausedForQueue: boolean;
  /** Set while a failed batch waits to be fetched again; batches handed over meanwhile are dropped. */
  retryTimer: NodeJS.Timeout | undefined;
  failures: number;
  /**
   * The records in hand. Replaced (never cleared) when the lane starts over (new generation, or a
   * rewind after a record failed), so completions of records taken before are told apart by
   * identity and ignored.
   */
  tracker: OffsetTracker;
  /** Last time a record finished or a batch was taken, or the lane went from idle to busy. */
  progressAt: number;
  /** Wakes the runner waiting for unfinished records to drop below the bound. */
  wakeRunner: (() => void) | undefined;
}

/**
 * Decouples handling from fetching. The client hands each fetched batch to `push` and goes on
 * fetching; every partition has a queue that one runner hands to the handler strictly in offset
 * order, taking everything queued at once as one batch. A handler either finishes a batch before
 * its promise resolves, or hands back one completion per record (`TakenBatch`), in which case the
 * next batch is taken at once and records finish in any order. Per partition an `OffsetTracker`
 * keeps the unfinished offsets, and the lowest one is what is committed: a slow record delays its
 * partition's commit, never its other records nor another partition's fetch.
 *
 * A *generation* is one group membership: a rebalance ends it (`invalidate`), which drops the
 * queues, makes `isActive()` false (and aborts `signal`) for the handlers and records still
 * running, and keeps their late results from being reported as done (the next owner reads from
 * the last commit).
 */
export class PartitionPipeline {
  readonly #options: PartitionPipelineOptions;
  readonly #log: Logger;
  readonly #maxUnfinished: number;
  readonly #lanes = new Map<string, Lane>();
  readonly #slotWaiters: (() => void)[] = [];
  readonly #idleWaiters: (() => void)[] = [];
  #slotsInUse = 0;
  #generation = 0;
  #abort = new AbortController();
  #closing = false;
  /** Record completions handed back and not settled yet, over every generation. */
  #unsettled = 0;

  constructor(options: PartitionPipelineOptions) {
    if (!Number.isInteger(options.maxQueuedBatches) || options.maxQueuedBatches < 1)
      throw new RangeError(`maxQueuedBatches must be ≥ 1, got ${options.maxQueuedBatches}`);
    if (!(options.maxConcurrentPartitions >= 1))
      throw new RangeError(`maxConcurrentPartitions must be ≥ 1, got ${options.maxConcurrentPartitions}`);
    const maxUnfinished = options.maxUnfinishedPerPartition ?? 1000;
    if (!Number.isInteger(maxUnfinished) || maxUnfinished < 1)
      throw new RangeError(`maxUnfinishedPerPartition must be ≥ 1, got ${maxUnfinished}`);
    this.#options = options;
    this.#log = options.logger;
    this.#maxUnfinished = maxUnfinished;
  }

  get generation(): number {
    return this.#generation;
  }

  /** Partitions whose handler is taking a batch now. */
  get running(): number {
    let n = 0;
    for (const lane of this.#lanes.values()) if (lane.takingSince !== undefined) n++;
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
    if (isIdle(lane)) lane.progressAt = Date.now();
    lane.queue.push({ ...batch, generation: this.#generation });
    if (lane.queue.length >= this.#options.maxQueuedBatches && !lane.pausedForQueue) {
      lane.pausedForQueue = true;
      this.#options.host.pause(lane.topic, lane.partition);
    }
    if (!lane.running)
      this.#run(lane).catch((err: unknown) => {
        // Only a throwing host gets here; the partition's next batch starts a runner again.
        this.#log.error({ err, topic: lane.topic, partition: lane.partition }, 'partition runner failed');
      });
  }

  /** The work in hand per partition of the current generation. */
  progress(now = Date.now()): PartitionProgress[] {
    const out: PartitionProgress[] = [];
    for (const lane of this.#lanes.values()) {
      const tracked = lane.tracker.progress();
      out.push({
        topic: lane.topic,
        partition: lane.partition,
        ...tracked,
        stalledSince: isIdle(lane) || lane.progressAt >= now ? undefined : lane.progressAt,
      });
    }
    return out;
  }

  /**
   * Ends the current generation (a rebalance started, or the client rejoined): queued batches
   * are dropped, running handlers and records see `isActive()` false and their results are not
   * reported. Pauses and retry timers are forgotten; the caller resumes the new assignment.
   */
  invalidate(): void {
    this.#generation++;
    this.#abort.abort();
    this.#abort = new AbortController();
    for (const lane of this.#lanes.values()) {
      lane.queue = [];
      lane.pausedForQueue = false;
      clearTimeout(lane.retryTimer);
      lane.retryTimer = undefined;
      lane.failures = 0;
      lane.tracker = new OffsetTracker();
      this.#wake(lane);
      if (!lane.running) this.#lanes.delete(laneKey(lane.topic, lane.partition));
    }
  }

  /**
   * Stops taking batches: queued ones are dropped (nobody started them; the next owner reads
   * them), running handlers and records see `isActive()` false. Resolves once no handler runs and
   * every record handed back has settled, after what finished was reported done.
   */
  async drain(): Promise<void> {
    this.#closing = true;
    this.#abort.abort();
    for (const lane of this.#lanes.values()) {
      lane.queue = [];
      clearTimeout(lane.retryTimer);
      lane.retryTimer = undefined;
      this.#wake(lane);
    }
    // Runners waiting for a slot get one as running handlers end, find their queue empty and stop.
    while (this.#busy()) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  #busy(): boolean {
    if (this.#unsettled > 0) return true;
    for (const lane of this.#lanes.values()) if (lane.running) return true;
    return false;
  }

  #maybeIdle(): void {
    if (!this.#busy()) for (const wake of this.#idleWaiters.splice(0)) wake();
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
        takingSince: undefined,
        pausedForQueue: false,
        retryTimer: undefined,
        failures: 0,
        tracker: new OffsetTracker(),
        progressAt: Date.now(),
        wakeRunner: undefined,
      };
      this.#lanes.set(key, lane);
    }
    return lane;
  }

  #wake(lane: Lane): void {
    const wake = lane.wakeRunner;
    lane.wakeRunner = undefined;
    wake?.();
  }

  async #run(lane: Lane): Promise<void> {
    lane.running = true;
    try {
      while (lane.queue.length > 0 && !this.#closing) {
        // Records in hand at the bound: the queue waits (and fills up to a pause) until some finish.
        if (lane.tracker.unfinished >= this.#maxUnfinished) {
          await new Promise<void>((resolve) => (lane.wakeRunner = resolve));
          continue;
        }
        // Taking a free slot synchronously starts the handler in the same turn as the push.
        if (!this.#tryAcquireSlot()) await this.#waitForSlot();
        try {
          // The queue may have been dropped while waiting for a slot.
          const taken = lane.queue;
          if (taken.length === 0 || this.#closing) break;
          lane.queue = [];
          if (lane.pausedForQueue) {
            lane.pausedForQueue = false;
            this.#options.host.resume(lane.topic, lane.partition);
          }
          await this.#handle(lane, taken);
        } finally {
          this.#releaseSlot();
        }
      }
    } finally {
      lane.running = false;
      this.#maybeIdle();
    }
  }

  async #handle(lane: Lane, taken: readonly QueuedBatch[]): Promise<void> {
    const first = taken[0] as QueuedBatch;
    const last = taken[taken.length - 1] as QueuedBatch;
    const { generation } = first;
    const records = taken.length === 1 ? first.records : taken.flatMap((b) => b.records);
    const signal = this.#abort.signal;
    const isActive = () => !this.#closing && this.#generation === generation;
    const ctx: BatchContext = {
      heartbeat: () => (isActive() ? this.#options.host.heartbeat() : Promise.resolve()),
      isActive,
      // A batch taken from an ended generation's queue gets that generation's aborted signal.
      signal: this.#generation === generation ? signal : AbortSignal.abort(),
    };
    let result: TakenBatch | undefined;
    // A rewind or a new generation while the handler takes the batch replaces the tracker: the
    // batch is then fetched again, and what it took here must not be counted twice.
    const tracker = lane.tracker;
    lane.takingSince = Date.now();
    try {
      // Resolving with nothing (void) means the whole batch is finished.
      result = (await this.#options.handleBatch(
        { topic: lane.topic, partition: lane.partition, records, lag: last.lag },
        ctx,
      )) as TakenBatch | undefined;
    } catch (err) {
      this.#failed(lane, (records[0] as IncomingRecord).offset, generation, err);
      return;
    } finally {
      lane.takingSince = undefined;
    }
    if (this.#generation !== generation || lane.tracker !== tracker) {
      // Ended or rewound while taking: nothing of it is reported, but its records may still run.
      if (result) this.#forget(result.finished);
      return;
    }
    lane.progressAt = Date.now();
    if (!result) {
      lane.failures = 0;
      tracker.take([], last.nextOffset);
      const committable = tracker.committable;
      if (committable !== undefined)
        this.#options.host.done(lane.topic, lane.partition, committable, generation);
      return;
    }
    if (result.finished.length !== records.length) {
      this.#forget(result.finished);
      const err = new RangeError(
        `handleBatch returned ${result.finished.length} completions for ${records.length} records`,
      );
      this.#failed(lane, first.records[0]?.offset ?? last.nextOffset, generation, err);
      return;
    }
    tracker.take(
      records.map((r) => r.offset),
      last.nextOffset,
    );
    records.forEach((record, i) => {
      this.#unsettled++;
      (result.finished[i] as Promise<void>).then(
        () => this.#recordFinished(lane, tracker, record.offset, generation),
        (err: unknown) => this.#recordFailed(lane, tracker, record.offset, generation, err),
      );
    });
  }

  /** Completions of records whose results no longer count: only waited for, by `drain`. */
  #forget(finished: readonly Promise<void>[]): void {
    for (const f of finished) {
      this.#unsettled++;
      f.catch(() => undefined).finally(() => {
        this.#unsettled--;
        this.#maybeIdle();
      });
    }
  }

  #recordFinished(lane: Lane, tracker: OffsetTracker, offset: string, generation: number): void {
    this.#unsettled--;
    if (lane.tracker === tracker) {
      lane.progressAt = Date.now();
      lane.failures = 0;
      const moved = tracker.finish(offset);
      if (moved !== undefined && this.#generation === generation)
        this.#options.host.done(lane.topic, lane.partition, moved, generation);
      if (tracker.unfinished < this.#maxUnfinished) this.#wake(lane);
    }
    this.#maybeIdle();
  }

  /**
   * A record that settled unfinished. In the current generation the lane starts over from its
   * lowest unfinished offset: what is queued is dropped, the partition sought back there and
   * fetched again after a backoff (records finished after it come again; the handler must
   * tolerate that, as it tolerates any redelivery).
   */
  #recordFailed(lane: Lane, tracker: OffsetTracker, offset: string, generation: number, err: unknown): void {
    this.#unsettled--;
    if (lane.tracker === tracker && !this.#closing && this.#generation === generation) {
      const from = tracker.committable ?? offset;
      lane.tracker = new OffsetTracker();
      this.#wake(lane);
      this.#failed(lane, from, generation, err);
    }
    this.#maybeIdle();
  }

  /**
   * A failed batch or record is not reported done. In the current generation the partition drops
   * what it fetched after it, is paused and sought back to `from`, and fetched again after a
   * backoff; a stale or closing one is left to the next owner.
   */
  #failed(lane: Lane, from: string, generation: number, err: unknown): void {
    if (this.#closing || this.#generation !== generation) {
      this.#log.info(
        { err, topic: lane.topic, partition: lane.partition, offset: from },
        'batch stopped after the partition was revoked or the consumer began closing; it is not committed',
      );
      return;
    }
    lane.failures++;
    lane.queue = [];
    lane.pausedForQueue = false;
    clearTimeout(lane.retryTimer);
    const delayMs = (this.#options.retryDelayMs ?? backoffMs)(lane.failures);
    this.#log.warn(
      {
        err,
        topic: lane.topic,
        partition: lane.partition,
        offset: from,
        attempt: lane.failures,
        retryInMs: delayMs,
      },
      'batch failed; it is not committed and is fetched again after a backoff',
    );
    this.#options.host.pause(lane.topic, lane.partition);
    this.#options.host.seek(lane.topic, lane.partition, from);
    lane.retryTimer = setTimeout(() => {
      lane.retryTimer = undefined;
      if (!this.#closing && this.#generation === generation)
        this.#options.host.resume(lane.topic, lane.partition);
    }, delayMs);
  }

  #tryAcquireSlot(): boolean {
    if (this.#slotsInUse >= this.#options.maxConcurrentPartitions) return false;
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

/** Nothing queued, in hand, being taken or waiting out a failure: the lane cannot be stalled. */
function isIdle(lane: Lane): boolean {
  return (
    lane.queue.length === 0 &&
    lane.tracker.unfinished === 0 &&
    lane.takingSince === undefined &&
    lane.retryTimer === undefined &&
    lane.failures === 0
  );
}

function laneKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
