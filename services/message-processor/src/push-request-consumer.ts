import { setTimeout as sleep } from 'node:timers/promises';
import {
  ProduceError,
  type BatchContext,
  type Consumer,
  type IncomingRecord,
  type KafkaClient,
  type PartitionProgress,
  type RecordBatch,
  type TakenBatch,
} from '@pushline/kafka';
import type { RedisOfflineStore } from '@pushline/offline-store';
import { pushTargetKey, type DlqReason, type PushRequest } from '@pushline/protocol';
import { RegistryIncompleteError } from '@pushline/registry';
import { backoffMs } from '@pushline/runtime';
import {
  SpanKind,
  extractTraceContext,
  injectTraceHeaders,
  withSpan,
  type Logger,
  type Tracer,
} from '@pushline/telemetry';
import type { LimitFunction } from 'p-limit';
import type { DeadLetterQueue } from './dead-letter.ts';
import {
  DependencyError,
  isRedisUnavailableError,
  type Dependency,
  type DependencyGate,
} from './dependency-gate.ts';
import { KeyedChains } from './keyed-chains.ts';
import type { ProcessorMetrics } from './metrics.ts';
import type { OutcomeCommitter } from './outcome-committer.ts';
import type { PublishedOutcomes } from './published-outcomes.ts';
import { decodePushRequest, truncate, type DecodeLimits, type DecodeResult } from './request-decoder.ts';
import type { PushRequestHandler, StoredHint } from './request-handler.ts';
import { ClaimAbandonedError, type Claim, type ClaimStatus, type RequestLedger } from './request-ledger.ts';

/**
 * A record left unfinished because its partition was revoked or the processor is closing: it is
 * not committed, and the next owner reads it again (the request ledger recognises what finished).
 */
class RecordAbandonedError extends Error {
  override readonly name = 'RecordAbandonedError';
  readonly partition: number;
  readonly offset: string;
  constructor(record: IncomingRecord, options?: { cause?: unknown }) {
    super(`record ${record.partition}@${record.offset} left to the partition's next owner`, options);
    this.partition = record.partition;
    this.offset = record.offset;
  }
}

/**
 * This consumer keeps the 100 ms fetch wait that the platform's other consumers left for 500 ms
 * (decision 0027). It is the one that pauses partitions for backpressure, and kafkajs fetches a
 * resumed partition only with its next fetch, after the one waiting at the broker. In three
 * interleaved pairs of scenario 3 at 500 ms the p99 at half of max was 44-103 ms against 34-39 ms.
 */
const PUSH_REQUEST_FETCH_WAIT_MS = 100;
/** How long the per-batch lookups may take before the records go on without them. */
const PREPARE_TIMEOUT_MS = 2_000;
/**
 * How long a batch's stored-messages lookup is trusted. A record can wait behind earlier ones of
 * its device (a burst, or a device that never acks); by then someone else (push-api, a user
 * fan-out on another partition) may have stored a message for it, so past this the record looks
 * again. Under a burst a device's records finish within a few seconds, so most still use it.
 */
const HINT_FRESH_MS = 5_000;

export interface PushRequestConsumerOptions {
  readonly kafka: KafkaClient;
  readonly topic: string;
  readonly groupId: string;
  readonly partitionsConcurrency: number;
  readonly maxUnfinishedPerPartition: number;
  /** Group session timeout; heartbeats go out every third of it, at most every 3 s. */
  readonly sessionTimeoutMs: number;
  readonly decodeLimits: DecodeLimits;
  /** Times decoding or handling a record may throw (dependencies healthy) before it is dead-lettered. */
  readonly maxAttempts: number;
  /** Bounds the records running at once over every partition (FIFO). */
  readonly inFlightLimit: LimitFunction;
  readonly dlq: DeadLetterQueue;
  readonly ledger: RequestLedger;
  readonly handler: PushRequestHandler;
  /** Asked once per batch which target devices have stored messages. */
  readonly store: RedisOfflineStore;
  /** Writes each handled request's events and marks it done, many requests per round trip. */
  readonly committer: OutcomeCommitter;
  /** Tells which events of an outcome a dead holder recorded are not in Kafka yet. */
  readonly published: PublishedOutcomes;
  /** Closed while Redis or Kafka is down: records wait in it instead of starting. */
  readonly gate: DependencyGate;
  readonly metrics: ProcessorMetrics;
  readonly tracer: Tracer;
  readonly logger: Logger;
  /** Called with the lag of each partition after each batch. */
  readonly onLag?: (partition: number, lag: number) => void;
  readonly onAssignment?: (assignment: Readonly<Record<string, number[]>>) => void;
}

/** One record as taken: its decoding (undefined if decoding threw) and the claim on its request. */
interface Item {
  readonly record: IncomingRecord;
  decoded: DecodeResult | undefined;
  claim: Claim | undefined;
}

/** What one batch looked up for all its records at once. */
interface Prepared {
  /** Claim statuses by ledger key, from one round trip; empty when it could not be made. */
  readonly claims: ReadonlyMap<string, ClaimStatus>;
  readonly hint: (StoredHint & { readonly at: number }) | undefined;
}

type Finished = 'processed' | 'duplicate' | 'dlq';

/**
 * The consumer-group member that works through `<prefix>push-requests`, record by record. Each
 * batch is taken in one step per partition: decode every record (bounded in size and depth before
 * parsing), claim every request in one Redis round trip and look up which devices have stored
 * messages in another. Then each record runs behind the earlier records of its Kafka key only
 * (per-device order) and concurrently with every other key, under the processor-wide in-flight
 * bound, and finishes once its outcome is in Kafka and marked done (or it is in the DLQ). The
 * consumer commits the lowest unfinished offset of each partition (libs/kafka), so a device that
 * never acks delays only its own later messages, and nothing unfinished is skipped after a crash.
 *
 * No record can stop a partition: one whose decoding or handling throws `maxAttempts` times while
 * Redis and Kafka answer goes to the DLQ (`processing_failed`). A failure of Redis or Kafka is not
 * the record's: the dependency gate closes, no record starts until it answers again, and the
 * record is retried without counting.
 */
export class PushRequestConsumer {
  readonly #options: PushRequestConsumerOptions;
  readonly #consumer: Consumer;
  readonly #log: Logger;
  /** Per partition: the key chains of its current generation (a new signal means a new generation). */
  readonly #chains = new Map<number, { readonly signal: AbortSignal; readonly chains: KeyedChains }>();

  constructor(options: PushRequestConsumerOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'push-request-consumer' });
    this.#consumer = options.kafka.consumer({
      groupId: options.groupId,
      topics: [options.topic],
      fromBeginning: true,
      partitionsConsumedConcurrently: options.partitionsConcurrency,
      maxUnfinishedPerPartition: options.maxUnfinishedPerPartition,
      sessionTimeoutMs: options.sessionTimeoutMs,
      heartbeatIntervalMs: Math.min(3000, Math.floor(options.sessionTimeoutMs / 3)),
      fetchWaitMs: PUSH_REQUEST_FETCH_WAIT_MS,
      handleBatch: (batch, ctx) => this.#take(batch, ctx),
      // Crashes kafkajs restarts from by itself are logged only (topics still being created at boot).
      onCrash: (_err, restartedBy) => {
        if (restartedBy === 'consumer') options.metrics.loopFailures.inc({ loop: 'consumer_crash' });
      },
      ...(options.onAssignment ? { onAssignment: options.onAssignment } : {}),
    });
  }

  /** True once the member has joined the group. */
  get joined(): boolean {
    return this.#consumer.joined;
  }

  /** The work in hand per partition (unfinished records, stalls). */
  progress(): readonly PartitionProgress[] {
    return this.#consumer.progress();
  }

  async start(): Promise<void> {
    await this.#consumer.start();
  }

  /** Stops taking records, lets the records in hand finish (waiting ones give up), commits, leaves. */
  async close(): Promise<void> {
    await this.#consumer.close();
    this.#chains.clear();
  }

  async #take(batch: RecordBatch, ctx: BatchContext): Promise<TakenBatch> {
    this.#options.onLag?.(batch.partition, batch.lag);
    const chains = this.#chainsOf(batch.partition, ctx.signal);
    const items = batch.records.map((record) => this.#decode(record));
    const prepared = await this.#prepare(items);
    return {
      finished: items.map((item) => chains.enqueue(keyOf(item), () => this.#run(item, prepared, ctx.signal))),
    };
  }

  #chainsOf(partition: number, signal: AbortSignal): KeyedChains {
    const current = this.#chains.get(partition);
    if (current?.signal === signal) return current.chains;
    const chains = new KeyedChains();
    this.#chains.set(partition, { signal, chains });
    return chains;
  }

  #decode(record: IncomingRecord): Item {
    let decoded: DecodeResult | undefined;
    try {
      decoded = decodePushRequest(record.value, this.#options.decodeLimits);
    } catch (err) {
      // Decoding is pure, so this is a bug; the record's attempts decode again and count it.
      this.#log.error({ err, partition: record.partition, offset: record.offset }, 'decoding a record threw');
    }
    const claim = decoded?.ok ? this.#claimFor(decoded.request) : undefined;
    return { record, decoded, claim };
  }

  /**
   * Claims every request of the batch (the first record of each id) and asks which target devices
   * have stored messages, in one round trip each. Never fails: without an answer in time the
   * records claim one by one and look for stored messages themselves when they run.
   */
  async #prepare(items: readonly Item[]): Promise<Prepared> {
    if (!this.#options.gate.isOpen()) return { claims: new Map(), hint: undefined };
    const firstClaims = new Map<string, Claim>();
    const devices = new Set<string>();
    for (const item of items) {
      if (item.claim && !firstClaims.has(item.claim.key)) firstClaims.set(item.claim.key, item.claim);
      if (item.decoded?.ok && item.decoded.request.target.type === 'device')
        devices.add(item.decoded.request.target.id);
    }
    const at = Date.now();
    const [claims, pending] = await Promise.allSettled([
      withTimeout(this.#options.ledger.claimMany([...firstClaims.values()]), PREPARE_TIMEOUT_MS),
      withTimeout(this.#options.store.withPending(devices), PREPARE_TIMEOUT_MS),
    ]);
    for (const s of [claims, pending]) {
      if (s.status === 'rejected') {
        this.#log.warn({ err: s.reason }, 'per-batch lookup failed; records go on one by one');
        void this.#dependencyOf(s.reason).then((d) => d && this.#options.gate.down(d, s.reason));
      }
    }
    return {
      claims: claims.status === 'fulfilled' ? claims.value : new Map(),
      hint: pending.status === 'fulfilled' ? { mayHavePending: pending.value, at } : undefined,
    };
  }

  /** Runs one record to its end: processed, duplicate or dead-lettered, or abandoned (rejects). */
  async #run(item: Item, prepared: Prepared, signal: AbortSignal): Promise<void> {
    const m = this.#options.metrics;
    m.records.inc({ result: 'received' });
    let recordFailures = 0;
    let dependencyFailures = 0;
    for (;;) {
      if (signal.aborted) return this.#abandon(item, signal.reason);
      let finished: Finished;
      try {
        await this.#options.gate.whenOpen(signal);
        finished = await this.#options.inFlightLimit(() => {
          // Waiting for a slot can take a while: the record may no longer be ours.
          if (signal.aborted) throw new RecordAbandonedError(item.record, { cause: signal.reason });
          return this.#attempt(item, prepared, signal);
        });
      } catch (err) {
        if (signal.aborted) return this.#abandon(item, err);
        const dependency = await this.#dependencyOf(err);
        if (dependency) {
          dependencyFailures++;
          m.retries.inc({ cause: dependency });
          this.#options.gate.down(dependency, err);
          this.#log.warn(
            { err, dependency, partition: item.record.partition, offset: item.record.offset },
            'a record failed on a dependency; it waits for it and is retried (not counted against it)',
          );
          if (!(await pause(backoffMs(dependencyFailures, 100, 2_000), signal)))
            return this.#abandon(item, err);
          continue;
        }
        recordFailures++;
        this.#log.warn(
          {
            err,
            partition: item.record.partition,
            offset: item.record.offset,
            attempt: recordFailures,
            maxAttempts: this.#options.maxAttempts,
          },
          recordFailures < this.#options.maxAttempts
            ? 'processing a record failed; retrying it'
            : 'processing a record failed on every attempt; dead-lettering it',
        );
        if (recordFailures >= this.#options.maxAttempts) {
          try {
            await this.#deadLetter(item.record, 'processing_failed', describe(err), signal);
          } catch (dlqErr) {
            return this.#abandon(item, dlqErr);
          }
          this.#releaseClaim(item);
          m.records.inc({ result: 'dlq' });
          return;
        }
        m.retries.inc({ cause: 'record' });
        if (!(await pause(backoffMs(recordFailures, 100, 5_000), signal))) return this.#abandon(item, err);
        continue;
      }
      m.records.inc({ result: finished });
      return;
    }
  }

  async #attempt(item: Item, prepared: Prepared, signal: AbortSignal): Promise<Finished> {
    const { record } = item;
    item.decoded ??= decodePushRequest(record.value, this.#options.decodeLimits);
    const decoded = item.decoded;
    if (!decoded.ok) {
      await this.#deadLetter(record, decoded.reason, decoded.detail, signal);
      return 'dlq';
    }
    const req = decoded.request;
    const claim = (item.claim ??= this.#claimFor(req));
    const parent = extractTraceContext({
      traceparent: record.headers['traceparent'],
      tracestate: record.headers['tracestate'],
    });
    return withSpan(
      this.#options.tracer,
      `process ${record.topic}`,
      {
        kind: SpanKind.CONSUMER,
        parent,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'process',
          'messaging.destination.name': record.topic,
          'messaging.destination.partition.id': String(record.partition),
          'messaging.kafka.offset': Number(record.offset),
          'messaging.consumer.group.name': this.#options.groupId,
          ...(record.key === null ? {} : { 'messaging.kafka.message.key': record.key }),
        },
      },
      async (span) => {
        span.setAttribute('messaging.message.id', req.id);
        span.setAttribute('pushline.target.type', req.target.type);
        let status = prepared.claims.get(claim.key);
        if ((status === 'claimed' || status === 'recorded') && !this.#options.ledger.holds(claim))
          status = undefined;
        if (status !== 'claimed' && status !== 'recorded' && status !== 'done') {
          // Held by another holder (waited for), a renewal found it gone, or the batch could not
          // claim: one by one, with the same token.
          try {
            status = await this.#options.ledger.claim(claim, signal);
          } catch (err) {
            if (err instanceof ClaimAbandonedError) throw err;
            throw new DependencyError('redis', err);
          }
        }
        if (status === 'done') {
          span.setAttribute('pushline.duplicate', true);
          return 'duplicate';
        }
        if (status === 'recorded') {
          const finished = await this.#publishRecorded(claim, signal);
          if (finished) return finished;
        }
        const hint =
          prepared.hint && Date.now() - prepared.hint.at <= HINT_FRESH_MS ? prepared.hint : undefined;
        const events = await this.#options.handler.handle(req, hint, {
          markSent: () => this.#redis(() => this.#options.ledger.markSent(claim)),
          sentBefore: () => this.#redis(() => this.#options.ledger.wasSent(claim)),
        });
        await this.#options.committer.commit(
          claim,
          events,
          injectTraceHeaders() as Record<string, string>,
          signal,
        );
        return 'processed';
      },
    );
  }

  /**
   * Finishes a request whose earlier holder recorded its outcome and died (or gave up) before
   * marking it done: publishes the recorded events the log does not have, never delivers again.
   * Undefined when nothing readable was recorded: the request is then handled as new.
   */
  async #publishRecorded(claim: Claim, signal: AbortSignal): Promise<Finished | undefined> {
    const recorded = await this.#redis(() => this.#options.ledger.recordedOutcome(claim));
    if (!recorded) return undefined;
    const missing = await this.#options.published.missing(recorded);
    this.#options.metrics.recoveredOutcomes.inc(
      { result: 'published' },
      recorded.events.length - missing.length,
    );
    this.#options.metrics.recoveredOutcomes.inc({ result: 'missing' }, missing.length);
    this.#log.info(
      { requestId: claim.requestId, recorded: recorded.events.length, missing: missing.length },
      'finishing a request an earlier holder recorded the outcome of',
    );
    await this.#options.committer.commit(
      claim,
      missing,
      injectTraceHeaders() as Record<string, string>,
      signal,
    );
    return missing.length === 0 ? 'duplicate' : 'processed';
  }

  #claimFor(req: PushRequest): Claim {
    return this.#options.ledger.claimFor(req.id, req.origin, (req.ttlSeconds ?? 0) > 0);
  }

  /** A ledger call whose failure is Redis's, never the record's. */
  async #redis<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      throw new DependencyError('redis', err);
    }
  }

  /** Writes a record to the DLQ, retrying a failing Kafka in place until it succeeds or `signal` aborts. */
  async #deadLetter(
    record: IncomingRecord,
    reason: DlqReason,
    detail: string,
    signal: AbortSignal,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#options.dlq.send(record, reason, detail);
        if (attempt > 1) this.#options.gate.up('kafka');
        break;
      } catch (err) {
        this.#options.metrics.retries.inc({ cause: 'kafka' });
        this.#options.gate.down('kafka', err);
        this.#log.warn(
          { err, partition: record.partition, offset: record.offset },
          'dead-lettering failed; retrying',
        );
        if (!(await pause(backoffMs(attempt, 100, 2_000), signal))) throw new DependencyError('kafka', err);
      }
    }
    this.#options.metrics.dlq.inc({ reason });
    this.#log.warn(
      { partition: record.partition, offset: record.offset, reason, detail },
      'record dead-lettered',
    );
  }

  /** Leaves the record to the next owner: not committed, its claim given up so nobody waits for it. */
  #abandon(item: Item, cause: unknown): never {
    this.#options.metrics.records.inc({ result: 'failed' });
    this.#releaseClaim(item);
    throw new RecordAbandonedError(item.record, { cause });
  }

  /** Gives up our claim in the background: a hung Redis must not hold the record (or close()) up. */
  #releaseClaim(item: Item): void {
    const claim = item.claim;
    if (!claim || !this.#options.ledger.holds(claim)) return;
    this.#options.ledger.releaseMany([claim]).catch((err: unknown) => {
      this.#options.ledger.forget(claim);
      this.#log.warn({ err, requestId: claim.requestId }, 'releasing a claim failed; it expires by itself');
    });
  }

  /**
   * Which dependency an error is a failure of, if any. Unknown errors (from the handler's registry
   * and store calls) count as Redis's when Redis does not answer a probe right now; otherwise they
   * are the record's.
   */
  async #dependencyOf(err: unknown): Promise<Dependency | undefined> {
    if (err instanceof DependencyError) return err.dependency;
    if (err instanceof RegistryIncompleteError) return 'registry';
    if (err instanceof ProduceError) return 'kafka';
    if (isRedisUnavailableError(err)) return 'redis';
    return (await this.#options.gate.check('redis')) ? undefined : 'redis';
  }
}

/** A record's order key: its Kafka key, else its target's (records without a key have no order). */
function keyOf(item: Item): string {
  if (item.record.key !== null) return item.record.key;
  return item.decoded?.ok ? pushTargetKey(item.decoded.request.target) : '';
}

function describe(err: unknown): string {
  return truncate(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
}

/** Waits `ms`; false when `signal` aborted first. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
