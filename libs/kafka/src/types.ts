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
  /** Keep the group membership alive during long batches. */
  heartbeat(): Promise<void>;
  /** False once the consumer is closing or the partition was revoked: stop taking new work. */
  isActive(): boolean;
}

export interface RecordBatch {
  readonly topic: string;
  readonly partition: number;
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
   * Handles one batch from one partition. The batch's offsets are committed only after the
   * promise resolves, so work is never committed before it finishes (at-least-once). A throw
   * redelivers the batch after a backoff.
   */
  readonly handleBatch: (batch: RecordBatch, ctx: BatchContext) => Promise<void>;
  /** Partitions processed at once by this member. Default 4. */
  readonly partitionsConsumedConcurrently?: number;
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
  /** Leaves the group after the batches in hand finish; their offsets are committed. */
  close(): Promise<void>;
}

export interface TopicSpec {
  readonly name: string;
  readonly partitions: number;
  readonly config?: Readonly<Record<string, string>>;
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
  close(): Promise<void>;
}

export interface KafkaClient {
  producer(): Producer;
  consumer(options: ConsumerOptions): Consumer;
  admin(): Admin;
}
