/**
 * The platform's view of Kafka. Services depend on these interfaces only; kafkajs lives behind
 * `createKafkaClient`, so it can be swapped for a maintained client (docs/decisions/0004).
 */

export interface OutgoingRecord {
  readonly key: string | null;
  /** null writes a tombstone. */
  readonly value: string | Buffer | null;
  readonly headers?: Readonly<Record<string, string>>;
}

export interface IncomingRecord {
  readonly topic: string;
  readonly partition: number;
  /** Kafka offsets are 64-bit; kept as the decimal string Kafka clients use. */
  readonly offset: string;
  readonly key: string | null;
  readonly value: Buffer | null;
  readonly headers: Readonly<Record<string, string>>;
  readonly timestamp: number;
}

export interface SendOptions {
  readonly signal?: AbortSignal;
}

export interface Producer {
  start(): Promise<void>;
  /**
   * Resolves once every record is acknowledged by all in-sync replicas (acks=all); rejects with
   * `ProduceError`. Aborting `options.signal` withdraws the records if they have not been handed to
   * the broker yet (rejecting with `SendWithdrawnError`: certainly not written); once they have, it
   * changes nothing.
   */
  send(topic: string, records: readonly OutgoingRecord[], options?: SendOptions): Promise<void>;
  close(): Promise<void>;
}

export interface BatchContext {
  /**
   * Keeps the group membership alive. The consumer heartbeats on its own while handlers run, so
   * calling this is optional; it rejects when the group is rebalancing.
   */
  heartbeat(): Promise<void>;
  /** False once the consumer is closing or the partition was revoked: stop taking new work. */
  isActive(): boolean;
  /** Aborted when `isActive()` turns false, so waits (backoffs, gates) can end at once. */
  readonly signal: AbortSignal;
}

/**
 * A batch the handler took without finishing it: one promise per record of the batch, in the
 * batch's order, each resolving when that record is finished (its work is done and may be
 * committed). A record whose promise rejects is not finished: in the current generation the
 * partition is read again from its lowest unfinished offset after a backoff, so records finished
 * after it are handed over again. A handler that retries in place and settles every record
 * itself never rewinds the partition.
 */
export interface TakenBatch {
  readonly finished: readonly Promise<void>[];
}

/** One assigned partition's handed-over work, for metrics and readiness. */
export interface PartitionProgress {
  readonly topic: string;
  readonly partition: number;
  /** Records handed to the handler and not finished. */
  readonly unfinished: number;
  /** The lowest unfinished offset: the committed offset cannot pass it. */
  readonly oldestUnfinishedOffset: string | undefined;
  /** When that record was handed over (ms since epoch). */
  readonly oldestUnfinishedSince: number | undefined;
  /**
   * Since when the partition has had work in hand (records unfinished, or a batch being taken)
   * without finishing any of it (ms since epoch); undefined while it makes progress or is idle.
   */
  readonly stalledSince: number | undefined;
}

export interface RecordBatch {
  readonly topic: string;
  readonly partition: number;
  /**
   * Records of one partition in offset order, following the previous batch of the partition
   * without a gap. May join several fetches that queued up while the previous batch ran.
   */
  readonly records: readonly IncomingRecord[];
  /** Records behind the end of the partition after this batch (consumer lag). */
  readonly lag: number;
}

export interface ConsumerOptions {
  readonly groupId: string;
  readonly topics: readonly string[];
  /** Where a group with no committed offset starts. Default false (latest). */
  readonly fromBeginning?: boolean;
  /**
   * Takes one batch from one partition. A partition's batches are handed over one after another in
   * offset order (the next once this promise resolves); different partitions run at once, and a
   * slow partition never holds up another's fetching. Resolving with nothing means every record of
   * the batch is finished; resolving with a `TakenBatch` hands each record's completion back, so
   * the partition's next batch is taken while records of this one still run. Either way the
   * committed offset is the lowest offset not finished yet (at-least-once: nothing unfinished is
   * ever committed past). A throw takes nothing: the partition drops what it fetched after the
   * batch and reads the batch again after a backoff.
   */
  readonly handleBatch: (batch: RecordBatch, ctx: BatchContext) => Promise<void> | Promise<TakenBatch>;
  /**
   * Records of a partition handed over and not finished; at this many its next batch waits (and
   * fetching pauses once `maxQueuedBatchesPerPartition` batches queue up behind it). Default 1000.
   */
  readonly maxUnfinishedPerPartition?: number;
  /** Partitions whose handler runs at once on this member. Default: no limit (every assigned one). */
  readonly partitionsConsumedConcurrently?: number;
  /**
   * Batches fetched ahead for a partition while its handler runs; at this many the partition is
   * paused until the handler takes them (all at once, as its next batch). Default 4.
   */
  readonly maxQueuedBatchesPerPartition?: number;
  /** Called when the member's assignment changes. */
  readonly onAssignment?: (assignment: Readonly<Record<string, number[]>>) => void;
  /**
   * Called when the member crashed out of the group, with who starts it again: the client itself
   * (a retriable error) or the consumer (an error the client gives up on), for metrics.
   */
  readonly onCrash?: (err: unknown, restartedBy: 'client' | 'consumer') => void;
  /** Default 30 000 ms. */
  readonly sessionTimeoutMs?: number;
  /** Default 3 000 ms. */
  readonly heartbeatIntervalMs?: number;
  /** Longest one fetch waits at the broker for records. Default: the client's, else 500 ms. */
  readonly fetchWaitMs?: number;
}

export interface Consumer {
  /** True while the member is in the group: set on each join, cleared by a crash or close (readiness). */
  readonly joined: boolean;
  /** Resolves once the member has joined the group and started fetching. */
  start(): Promise<void>;
  /** The work in hand per assigned partition that has had any (a partition only fetched so far is absent). */
  progress(): readonly PartitionProgress[];
  /**
   * Stops fetching, drops batches not started yet (the next owner reads them), lets the running
   * ones finish (they see `isActive()` false), commits what finished, then leaves the group.
   */
  close(): Promise<void>;
}

export interface TopicSpec {
  readonly name: string;
  readonly partitions: number;
  readonly config?: Readonly<Record<string, string>>;
}

export interface PartitionLag {
  readonly partition: number;
  /** High watermark: the offset the next record will get. */
  readonly end: number;
  /** The group's committed offset, -1 when it has none (lag then counts from the low watermark). */
  readonly committed: number;
  readonly lag: number;
}

export interface Admin {
  /**
   * Creates missing topics and waits until every partition has a leader (default bound 30 s);
   * existing ones are left alone, and losing a creation race to another process is fine.
   */
  ensureTopics(specs: readonly TopicSpec[], timeoutMs?: number): Promise<void>;
  listTopics(): Promise<string[]>;
  /** Sum of (end offset - committed offset) over the topic's partitions for a group. */
  groupLag(groupId: string, topic: string): Promise<number>;
  /**
   * Per partition of the topic: the high watermark, the group's committed offset (-1: none yet)
   * and the lag between them, read from the broker, so it is right whatever the group's members
   * are doing (hung, dead or gone).
   */
  groupLagByPartition(groupId: string, topic: string): Promise<PartitionLag[]>;
  /**
   * Hands `visit` every record of the topic with a timestamp at or after `sinceMs` that is in the
   * log when the call begins (each partition up to its end then), in offset order per partition.
   * Joins a consumer group of its own, so it costs a group round: for rare checks, such as what a
   * dead process published before it died. Rejects after `timeoutMs` (default 30 000 ms).
   */
  recordsSince(
    topic: string,
    sinceMs: number,
    visit: (record: IncomingRecord) => void,
    timeoutMs?: number,
  ): Promise<void>;
  close(): Promise<void>;
}

export interface KafkaClient {
  producer(): Producer;
  consumer(options: ConsumerOptions): Consumer;
  admin(): Admin;
}
