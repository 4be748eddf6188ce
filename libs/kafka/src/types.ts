/**
 * The platform's view of Kafka. Services depend on these interfaces only; kafkajs lives behind
 * `createKafkaClient`, so it can be swapped for a maintained client (docs/decisions/0004).
 */

export interface OutgoingRecord {
  readonly key: string | null;
  readonly value: string | Buffer;
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

export interface Producer {
  start(): Promise<void>;
  /** Resolves once every record is acknowledged by all in-sync replicas (acks=all). */
  send(topic: string, records: readonly OutgoingRecord[]): Promise<void>;
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
   * Handles one batch from one partition. A partition's batches run one after another in offset
   * order; different partitions run at once, and a slow partition never holds up another's
   * fetching. The batch's offsets are committed only after the promise resolves, in order, so
   * work is never committed before it finishes (at-least-once). A throw commits nothing: the
   * partition drops what it fetched after the batch and reads the batch again after a backoff.
   */
  readonly handleBatch: (batch: RecordBatch, ctx: BatchContext) => Promise<void>;
  /** Partitions whose handler runs at once on this member. Default: no limit (every assigned one). */
  readonly partitionsConsumedConcurrently?: number;
  /**
   * Batches fetched ahead for a partition while its handler runs; at this many the partition is
   * paused until the handler takes them (all at once, as its next batch). Default 4.
   */
  readonly maxQueuedBatchesPerPartition?: number;
  /** Called when the member's assignment changes. */
  readonly onAssignment?: (assignment: Readonly<Record<string, number[]>>) => void;
  /** Default 30 000 ms. */
  readonly sessionTimeoutMs?: number;
  /** Default 3 000 ms. */
  readonly heartbeatIntervalMs?: number;
}

export interface Consumer {
  /** True while the member is in the group: set on each join, cleared by a crash or close (readiness). */
  readonly joined: boolean;
  /** Resolves once the member has joined the group and started fetching. */
  start(): Promise<void>;
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
  close(): Promise<void>;
}

export interface KafkaClient {
  producer(): Producer;
  consumer(options: ConsumerOptions): Consumer;
  admin(): Admin;
}
