import type { BatchContext, Consumer, IncomingRecord, KafkaClient, RecordBatch } from '@pushline/kafka';
import type { RedisOfflineStore } from '@pushline/offline-store';
import { pushTargetKey, type PushRequest } from '@pushline/protocol';
import {
  SpanKind,
  extractTraceContext,
  injectTraceHeaders,
  withSpan,
  type Logger,
  type Tracer,
} from '@pushline/telemetry';
import type { DeadLetterQueue } from './dead-letter.ts';
import { runKeyed, type Semaphore } from './keyed-runner.ts';
import type { ProcessorMetrics } from './metrics.ts';
import type { OutcomeCommitter } from './outcome-committer.ts';
import { decodePushRequest } from './request-decoder.ts';
import type { PushRequestHandler, StoredHint } from './request-handler.ts';
import type { ClaimResult, RequestLedger } from './request-ledger.ts';

/**
 * Thrown from a batch that stopped before its end (partition revoked, processor closing, a record
 * failed): the batch's offsets are then not committed and its records are redelivered; the ones
 * that did finish are recognised as duplicates by the request ledger.
 */
export class BatchInterruptedError extends Error {
  override readonly name = 'BatchInterruptedError';
  readonly skipped: number;
  constructor(message: string, skipped: number, options?: { cause?: unknown }) {
    super(message, options);
    this.skipped = skipped;
  }
}

export interface PushRequestConsumerOptions {
  readonly kafka: KafkaClient;
  readonly topic: string;
  readonly groupId: string;
  readonly partitionsConcurrency: number;
  /** Group session timeout; heartbeats go out every third of it, at most every 3 s. */
  readonly sessionTimeoutMs: number;
  readonly maxPayloadBytes: number;
  readonly semaphore: Semaphore;
  readonly dlq: DeadLetterQueue;
  readonly ledger: RequestLedger;
  readonly handler: PushRequestHandler;
  /** Asked once per batch which target devices have stored messages. */
  readonly store: RedisOfflineStore;
  /** Writes each handled request's events and marks it done, many requests per round trip. */
  readonly committer: OutcomeCommitter;
  readonly metrics: ProcessorMetrics;
  readonly tracer: Tracer;
  readonly logger: Logger;
  /** Called with the lag of each partition after each batch. */
  readonly onLag?: (partition: number, lag: number) => void;
  readonly onAssignment?: (assignment: Readonly<Record<string, number[]>>) => void;
}

/**
 * The consumer-group member that works through `<prefix>push-requests`. Per batch (one
 * partition): records with the same key run one after another in offset order, different keys in
 * parallel under the processor-wide in-flight bound. The batch returns only when every record has
 * its outcome in Kafka (or in the DLQ), and only then are its offsets committed (at-least-once).
 */
export class PushRequestConsumer {
  readonly #o: PushRequestConsumerOptions;
  readonly #consumer: Consumer;
  readonly #log: Logger;

  constructor(options: PushRequestConsumerOptions) {
    this.#o = options;
    this.#log = options.logger.child({ component: 'push-request-consumer' });
    this.#consumer = options.kafka.consumer({
      groupId: options.groupId,
      topics: [options.topic],
      fromBeginning: true,
      partitionsConsumedConcurrently: options.partitionsConcurrency,
      sessionTimeoutMs: options.sessionTimeoutMs,
      heartbeatIntervalMs: Math.min(3000, Math.floor(options.sessionTimeoutMs / 3)),
      handleBatch: (batch, ctx) => this.#handleBatch(batch, ctx),
      ...(options.onAssignment ? { onAssignment: options.onAssignment } : {}),
    });
  }

  /** True once the member has joined the group. */
  get joined(): boolean {
    return this.#consumer.joined;
  }

  async start(): Promise<void> {
    await this.#consumer.start();
  }

  /** Stops taking records, lets the records in hand finish, commits, leaves the group. */
  async close(): Promise<void> {
    await this.#consumer.close();
  }

  async #handleBatch(batch: RecordBatch, ctx: BatchContext): Promise<void> {
    this.#o.onLag?.(batch.partition, batch.lag);
    // The consumer heartbeats on its own and turns this false as soon as a rebalance starts, so
    // the partition is handed over promptly.
    const isActive = () => ctx.isActive();
    const work = await this.#prepare(batch.records);
    const result = await runKeyed(
      work.items,
      (item) => item.record.key ?? '',
      (item) => this.#processItem(item, work, isActive),
      { semaphore: this.#o.semaphore, shouldContinue: isActive },
    );
    // Claims of requests never started (the batch stopped early) are given up at once, so
    // their redelivery does not wait for the claim to expire.
    await this.#release(
      [...work.claims].flatMap(([requestId, c]) =>
        c.status === 'claimed' ? [{ requestId, token: c.token }] : [],
      ),
    );
    if (result.errors.length > 0) {
      this.#o.metrics.loopFailures.inc({ loop: 'batch' });
      this.#log.warn(
        {
          err: result.errors[0],
          partition: batch.partition,
          failed: result.errors.length,
          skipped: result.skipped,
        },
        'batch failed; it is redelivered after a backoff',
      );
      throw new BatchInterruptedError('records of the batch failed', result.skipped, {
        cause: result.errors[0],
      });
    }
    if (result.skipped > 0) {
      this.#log.info(
        { partition: batch.partition, completed: result.completed, skipped: result.skipped },
        'batch interrupted (rebalance or close); the rest is redelivered to the next owner',
      );
      // Our own error keeps the batch from being committed.
      throw new BatchInterruptedError('batch interrupted before its end', result.skipped);
    }
  }

  /**
   * Decodes the batch (bad records go to the DLQ at once), claims every request id in one round
   * trip and looks up which target devices have stored messages in another.
   */
  async #prepare(records: readonly IncomingRecord[]): Promise<BatchWork> {
    const m = this.#o.metrics;
    const items: WorkItem[] = [];
    const firstOf = new Map<string, WorkItem>();
    const devices = new Set<string>();
    for (const record of records) {
      const decoded = decodePushRequest(record.value, this.#o.maxPayloadBytes);
      if (!decoded.ok) {
        m.records.inc({ result: 'received' });
        try {
          await this.#o.dlq.send(record, decoded.reason, decoded.detail);
        } catch (err) {
          m.records.inc({ result: 'failed' });
          throw err;
        }
        m.dlq.inc({ reason: decoded.reason });
        m.records.inc({ result: 'dlq' });
        this.#log.warn(
          {
            partition: record.partition,
            offset: record.offset,
            reason: decoded.reason,
            detail: decoded.detail,
          },
          'record dead-lettered',
        );
        continue;
      }
      const req = decoded.request;
      // The same id twice in one batch: the later one is a duplicate of the first, which holds
      // the claim until the batch ends (waiting on it here would wait on ourselves).
      const item: WorkItem = { record, req, duplicateOf: firstOf.get(req.id) };
      if (!item.duplicateOf) firstOf.set(req.id, item);
      if (req.target.type === 'device') devices.add(req.target.id);
      items.push(item);
    }
    const [claims, pending] = await Promise.allSettled([
      this.#o.ledger.claimMany([...firstOf.keys()]),
      this.#o.store.withPending(devices),
    ]);
    if (pending.status === 'rejected') {
      if (claims.status === 'fulfilled') {
        const taken = [...claims.value].flatMap(([requestId, c]) =>
          c.status === 'claimed' ? [{ requestId, token: c.token }] : [],
        );
        await this.#release(taken);
      }
      throw pending.reason;
    }
    if (claims.status === 'rejected') throw claims.reason;
    return { items, claims: claims.value, hint: { mayHavePending: pending.value } };
  }

  #processItem(item: WorkItem, work: BatchWork, isActive: () => boolean): Promise<void> {
    const { record, req } = item;
    const parent = extractTraceContext({
      traceparent: record.headers['traceparent'],
      tracestate: record.headers['tracestate'],
    });
    return withSpan(
      this.#o.tracer,
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
          'messaging.consumer.group.name': this.#o.groupId,
          ...(record.key === null ? {} : { 'messaging.kafka.message.key': record.key }),
        },
      },
      async (span) => {
        const m = this.#o.metrics;
        m.records.inc({ result: 'received' });
        span.setAttribute('messaging.message.id', req.id);
        span.setAttribute('pushline.target.type', req.target.type);
        if (record.key !== null && record.key !== pushTargetKey(req.target)) {
          this.#log.debug({ key: record.key, requestId: req.id }, 'record key is not its target key');
        }
        if (item.duplicateOf) {
          span.setAttribute('pushline.duplicate', true);
          m.records.inc({ result: 'duplicate' });
          return;
        }
        let claim = work.claims.get(req.id);
        if (claim?.status !== 'claimed') {
          // Done already, or held by another processor: the single-request path tells them apart
          // and waits for a live holder.
          try {
            claim = await this.#o.ledger.claim(req.id, isActive);
          } catch (err) {
            m.records.inc({ result: 'failed' });
            throw err;
          }
          if (claim.status === 'done') {
            span.setAttribute('pushline.duplicate', true);
            m.records.inc({ result: 'duplicate' });
            return;
          }
          work.claims.set(req.id, claim);
        }
        try {
          const events = await this.#o.handler.handle(req, work.hint);
          await this.#o.committer.commit(req.id, events, injectTraceHeaders() as Record<string, string>);
          work.claims.delete(req.id);
          m.records.inc({ result: 'processed' });
        } catch (err) {
          m.records.inc({ result: 'failed' });
          work.claims.delete(req.id);
          await this.#o.ledger.release(req.id, claim.token).catch((releaseErr: unknown) => {
            this.#log.warn({ err: releaseErr, requestId: req.id }, 'releasing a failed request failed');
          });
          throw err;
        }
      },
    );
  }

  async #release(claims: readonly { requestId: string; token: string }[]): Promise<void> {
    await this.#o.ledger.releaseMany(claims).catch((err: unknown) => {
      this.#log.warn({ err, requests: claims.length }, 'releasing unfinished requests failed');
    });
  }
}

interface WorkItem {
  readonly record: IncomingRecord;
  readonly req: PushRequest;
  /** The earlier record of the same batch with the same request id. */
  readonly duplicateOf: WorkItem | undefined;
}

interface BatchWork {
  readonly items: readonly WorkItem[];
  readonly claims: Map<string, ClaimResult | { readonly status: 'held' }>;
  readonly hint: StoredHint;
}
