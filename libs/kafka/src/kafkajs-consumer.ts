import { setTimeout as sleep } from 'node:timers/promises';
import type { Consumer as KjsConsumer, EachBatchPayload, IHeaders, Kafka, KafkaMessage } from 'kafkajs';
import { backoffMs, closeOnce, runCleanup } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import { OffsetCommitter, type PartitionOffset } from './offset-committer.ts';
import { PartitionPipeline } from './partition-pipeline.ts';
import type { Consumer, ConsumerOptions, IncomingRecord, PartitionProgress } from './types.ts';

/**
 * How long a finished offset waits to share one commit request with other partitions'. Kafka
 * appends every commit to its offsets log, and with batches finishing per partition instead of
 * per fetch round, committing each one at once costs the broker a request per batch. A commit
 * that never happens (crash, revocation) only means redelivered records, which the handler
 * already has to tolerate; close() and rebalances send what is pending at once.
 */
const COMMIT_LINGER_MS = 100;

/**
 * How long a fetch waits at the broker when there is nothing to read: 500 ms, the Java
 * consumer's `fetch.max.wait.ms`. The broker answers at once when a record arrives, so this is
 * not added to delivery; it sets how often an idle consumer asks again. At the 100 ms used
 * before, an idle console spent about 8 ms of CPU a second more on fetching, the processor about
 * as much, and the broker more on answering them (docs/performance.md, "Idle consumers fetch
 * twice a second").
 * Its price: close(), a seek, and a partition resumed while every other one was paused, wait up
 * to this long for the fetch in flight.
 */
const DEFAULT_FETCH_WAIT_MS = 500;

/** What one group membership of the client lends us: its commit and heartbeat, bound to it. */
interface Membership {
  readonly generation: number;
  readonly commit: EachBatchPayload['commitOffsetsIfNecessary'];
  readonly heartbeat: () => Promise<void>;
}

/**
 * The kafkajs consumer behind `Consumer`. kafkajs fetches from a broker, hands that fetch's
 * batches to `eachBatch` and fetches again only when every one of them returned; so here
 * `eachBatch` only queues the batch in a `PartitionPipeline` and marks its records as read
 * (the fetch position), and returns at once. Handling, commits (`OffsetCommitter`, autoCommit
 * off) and backpressure (pausing a partition whose queue is full) happen outside kafkajs's loop,
 * which therefore keeps fetching and heartbeating however long a handler takes.
 */
export class KafkajsConsumer implements Consumer {
  readonly #options: ConsumerOptions;
  readonly #consumer: KjsConsumer;
  readonly #log: Logger;
  readonly #pipeline: PartitionPipeline;
  readonly #committer: OffsetCommitter;
  #membership: Membership | undefined;
  #closed = false;
  readonly #stop = new AbortController();
  /** The consumer's own restart after a crash the client gave up on, while it runs. */
  #restarting: Promise<void> | undefined;
  /** A crash the client gave up on came since the restart's last attempt began. */
  #gaveUp = false;
  #joined = false;

  /** `clientFetchWaitMs`: the client's wait, for consumers that set none of their own. */
  constructor(
    kafka: Kafka,
    options: ConsumerOptions,
    log: Logger,
    clientFetchWaitMs: number = DEFAULT_FETCH_WAIT_MS,
  ) {
    this.#options = options;
    this.#log = log.child({ groupId: options.groupId });
    this.#consumer = kafka.consumer({
      groupId: options.groupId,
      allowAutoTopicCreation: false,
      sessionTimeout: options.sessionTimeoutMs ?? 30_000,
      heartbeatInterval: options.heartbeatIntervalMs ?? 3_000,
      rebalanceTimeout: 60_000,
      maxWaitTimeInMs: options.fetchWaitMs ?? clientFetchWaitMs,
      retry: { initialRetryTime: 100, retries: 10 },
    });
    this.#pipeline = new PartitionPipeline({
      handleBatch: options.handleBatch,
      logger: this.#log,
      maxQueuedBatches: options.maxQueuedBatchesPerPartition ?? 4,
      maxConcurrentPartitions: options.partitionsConsumedConcurrently ?? Number.POSITIVE_INFINITY,
      ...(options.maxUnfinishedPerPartition === undefined
        ? {}
        : { maxUnfinishedPerPartition: options.maxUnfinishedPerPartition }),
      host: {
        pause: (topic, partition) => this.#pause([{ topic, partitions: [partition] }]),
        resume: (topic, partition) => this.#resume([{ topic, partitions: [partition] }]),
        seek: (topic, partition, offset) => this.#seek(topic, partition, offset),
        done: (topic, partition, offset, generation) =>
          this.#committer.add(topic, partition, offset, generation),
        heartbeat: () => this.#membership?.heartbeat() ?? Promise.resolve(),
      },
    });
    this.#committer = new OffsetCommitter({
      logger: this.#log,
      lingerMs: COMMIT_LINGER_MS,
      isCurrent: (generation) =>
        generation === this.#pipeline.generation && this.#membership?.generation === generation,
      commit: (offsets) => this.#commit(offsets),
    });
    this.#consumer.on(this.#consumer.events.GROUP_JOIN, (event) => {
      const assignment = event.payload.memberAssignment;
      // Every join is a new generation: kafkajs reads each assigned partition again from its
      // committed offset, so what is queued from before is dropped rather than handled twice.
      this.#pipeline.invalidate();
      this.#membership = undefined;
      // Pauses outlive a rejoin in kafkajs (not a restart after a crash): start from a clean slate.
      const all = Object.entries(assignment).map(([topic, partitions]) => ({ topic, partitions }));
      if (this.#closed) {
        // kafkajs restarted after a crash that raced close(): leave again, or this member would
        // hold its partitions unconsumed and keep the process alive.
        this.#pause(all);
        this.#consumer
          .disconnect()
          .catch((err: unknown) => this.#log.warn({ err }, 'leaving the group after a late rejoin failed'));
        return;
      }
      this.#resume(all);
      this.#joined = true;
      this.#log.info({ assignment }, 'joined consumer group');
      options.onAssignment?.(assignment);
    });
    this.#consumer.on(this.#consumer.events.REBALANCING, () => {
      // What finished still belongs to this generation, which the coordinator accepts commits
      // from until the group has rejoined: send it now (the send captures the generation at once).
      void this.#committer.flush();
      // Stop starting work now; the partitions may be someone else's in a moment.
      this.#pipeline.invalidate();
      this.#membership = undefined;
      this.#log.info('consumer group rebalancing');
    });
    this.#consumer.on(this.#consumer.events.CRASH, (event) => {
      this.#pipeline.invalidate();
      this.#membership = undefined;
      this.#joined = false;
      const { error, restart } = event.payload;
      this.#log.error({ err: error, restart }, 'consumer crashed');
      options.onCrash?.(error, restart ? 'client' : 'consumer');
      // kafkajs restarts only after errors it deems retriable; after any other (a group
      // coordinator not found while the broker restarts, a protocol the group refuses) it has
      // left the group for good, and the partitions would sit unconsumed until the process ends.
      if (restart || this.#closed) return;
      this.#gaveUp = true;
      this.#restarting ??= this.#restartAfterCrash();
    });
  }

  async start(): Promise<void> {
    const joined = new Promise<void>((resolve) => {
      const remove = this.#consumer.on(this.#consumer.events.GROUP_JOIN, () => {
        remove();
        resolve();
      });
    });
    await this.#run();
    await joined;
  }

  /** Connects, subscribes and runs kafkajs's consumer; resolves once it is running (not joined). */
  async #run(): Promise<void> {
    await this.#consumer.connect();
    await this.#consumer.subscribe({
      topics: [...this.#options.topics],
      fromBeginning: this.#options.fromBeginning ?? false,
    });
    await this.#consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      // eachBatch returns at once, so one kafkajs worker is plenty; handlers run in the pipeline.
      partitionsConsumedConcurrently: 1,
      eachBatch: async (payload) => this.#take(payload),
    });
  }

  /** Runs the client again, with backoff, until it runs or the consumer closes. */
  async #restartAfterCrash(): Promise<void> {
    try {
      for (let attempt = 1; !this.#closed; attempt++) {
        const waitMs = backoffMs(attempt, 500, 10_000);
        this.#log.warn({ attempt, waitMs }, 'the client gave up on the consumer; starting it again');
        await sleep(waitMs, undefined, { signal: this.#stop.signal });
        try {
          this.#gaveUp = false;
          // A join that fails again crashes inside run(), which still resolves: try once more.
          await this.#run();
          if (!this.#gaveUp) return;
        } catch (err) {
          this.#log.error({ err, attempt }, 'starting the consumer again failed; retrying');
          await this.#consumer.disconnect().catch(() => undefined);
        }
      }
    } catch {
      // Aborted by close().
    } finally {
      this.#restarting = undefined;
    }
  }

  get joined(): boolean {
    return this.#joined;
  }

  progress(): readonly PartitionProgress[] {
    return this.#pipeline.progress();
  }

  readonly close = closeOnce(async () => {
    this.#closed = true;
    this.#joined = false;
    this.#stop.abort();
    // Synchronously, so a handler asking isActive() right after close() hears no: nothing more is
    // fetched for paused partitions, whatever is already on its way is not taken, queued batches
    // are dropped (the next owner reads them) and running handlers and records are asked to stop.
    this.#pause(this.#options.topics.map((topic) => ({ topic })));
    const drained = this.#pipeline.drain();
    await runCleanup([
      { name: 'restart after a crash', run: () => this.#restarting ?? Promise.resolve() },
      { name: 'finish running batches', run: () => drained },
      { name: 'commit finished batches', run: () => this.#committer.flush() },
      { name: 'leave group', run: () => this.#consumer.disconnect() },
    ]);
  });

  #take(payload: EachBatchPayload): void {
    const { batch } = payload;
    const generation = this.#pipeline.generation;
    if (this.#membership?.generation !== generation) {
      this.#membership = {
        generation,
        commit: payload.commitOffsetsIfNecessary,
        heartbeat: payload.heartbeat,
      };
    }
    const last = batch.messages[batch.messages.length - 1];
    if (!last) return;
    // Not taken (closing, stale after a seek, or the partition waits to refetch a failed batch):
    // left unresolved, so kafkajs does not move past it.
    if (this.#closed || payload.isStale() || !this.#pipeline.accepts(batch.topic, batch.partition)) return;
    const records = batch.messages.map((m) => incomingRecord(batch.topic, batch.partition, m));
    // The fetch position moves now, so the next fetch brings this partition's next records
    // while the handler works; the commit waits for the handler.
    payload.resolveOffset(last.offset);
    this.#pipeline.push({
      topic: batch.topic,
      partition: batch.partition,
      records,
      nextOffset: (BigInt(batch.lastOffset()) + 1n).toString(),
      lag: Number(batch.offsetLag()),
    });
  }

  #commit(offsets: readonly PartitionOffset[]): Promise<void> {
    const membership = this.#membership;
    if (!membership) return Promise.resolve();
    const byTopic = new Map<string, { partition: number; offset: string }[]>();
    for (const { topic, partition, offset } of offsets) {
      const list = byTopic.get(topic) ?? [];
      list.push({ partition, offset });
      byTopic.set(topic, list);
    }
    // kafkajs's commit with explicit offsets goes straight to the coordinator with the current
    // generation, in one attempt; retries are the committer's, which checks the generation first.
    return membership.commit({
      topics: [...byTopic].map(([topic, partitions]) => ({ topic, partitions })),
    });
  }

  #pause(topics: { topic: string; partitions?: number[] }[]): void {
    try {
      this.#consumer.pause(topics);
    } catch (err) {
      // Only before the first join or between a crash and the restart: the next join starts clean.
      this.#log.debug({ err }, 'pause skipped: consumer not running');
    }
  }

  #resume(topics: { topic: string; partitions?: number[] }[]): void {
    try {
      this.#consumer.resume(topics);
    } catch (err) {
      this.#log.debug({ err }, 'resume skipped: consumer not running');
    }
  }

  #seek(topic: string, partition: number, offset: string): void {
    try {
      this.#consumer.seek({ topic, partition, offset });
    } catch (err) {
      this.#log.debug({ err, topic, partition }, 'seek skipped: consumer not running');
    }
  }
}

/** A kafkajs message of a batch as the platform's `IncomingRecord`. */
export function incomingRecord(topic: string, partition: number, m: KafkaMessage): IncomingRecord {
  return {
    topic,
    partition,
    offset: m.offset,
    key: m.key ? m.key.toString('utf8') : null,
    value: m.value,
    headers: decodeHeaders(m.headers),
    timestamp: Number(m.timestamp),
  };
}

function decodeHeaders(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!headers) return out;
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    const first = Array.isArray(value) ? value[0] : value;
    if (first !== undefined) out[name] = first.toString();
  }
  return out;
}
