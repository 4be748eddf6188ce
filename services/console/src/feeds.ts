import { randomBytes } from 'node:crypto';
import type { TopicNames } from '@pushline/config';
import type { Consumer, IncomingRecord, KafkaClient, Producer } from '@pushline/kafka';
import { DeliveryEvent, DlqHeaders, PushRequest, pushTargetKey } from '@pushline/protocol';
import type { Logger } from '@pushline/telemetry';

/** A dead-lettered record as the console shows it. */
export interface DlqEntry {
  /** `partition:offset` in the DLQ topic. */
  readonly ref: string;
  readonly key: string | null;
  readonly value: string;
  readonly reason: string;
  readonly detail: string;
  readonly source: string;
  readonly at: number;
  replayed?: { readonly at: number; readonly id: string };
}

export class ReplayError extends Error {
  override readonly name = 'ReplayError';
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** The newest `capacity` items, oldest first. */
class Ring<T> {
  readonly #items: T[] = [];
  readonly #capacity: number;
  constructor(capacity: number) {
    this.#capacity = capacity;
  }
  push(item: T): void {
    this.#items.push(item);
    if (this.#items.length > this.#capacity) this.#items.splice(0, this.#items.length - this.#capacity);
  }
  items(): readonly T[] {
    return this.#items;
  }
}

export interface KafkaFeedsOptions {
  readonly kafka: KafkaClient;
  readonly topics: TopicNames;
  readonly logger: Logger;
  /** Newest delivery events kept. Default 100. */
  readonly eventsCapacity?: number;
  /** Newest DLQ records kept. Default 200. */
  readonly dlqCapacity?: number;
}

/**
 * What the console reads from and writes to Kafka: the newest delivery events (from the time the
 * console started), the dead-letter topic (all of it that Kafka retains, newest kept), and replays
 * of dead-lettered records into push-requests. Each console instance reads in consumer groups of
 * its own and commits nothing that matters to anyone else.
 */
export class KafkaFeeds {
  readonly #options: KafkaFeedsOptions;
  readonly #events: Ring<DeliveryEvent & { readonly traceparent?: string }>;
  readonly #dlq: Ring<DlqEntry>;
  readonly #consumers: Consumer[];
  readonly #producer: Producer;

  constructor(options: KafkaFeedsOptions) {
    this.#options = options;
    this.#events = new Ring(options.eventsCapacity ?? 100);
    this.#dlq = new Ring(options.dlqCapacity ?? 200);
    const instance = randomBytes(6).toString('hex');
    this.#consumers = [
      options.kafka.consumer({
        groupId: `pushline-console-events-${instance}`,
        topics: [options.topics.deliveryEvents],
        fromBeginning: false,
        handleBatch: async (batch) => {
          for (const record of batch.records) this.#onEvent(record);
        },
      }),
      options.kafka.consumer({
        groupId: `pushline-console-dlq-${instance}`,
        topics: [options.topics.pushRequestsDlq],
        fromBeginning: true,
        handleBatch: async (batch) => {
          for (const record of batch.records) this.#onDeadLetter(record);
        },
      }),
    ];
    this.#producer = options.kafka.producer();
  }

  /** True once both consumers are in their groups (a console that is not yet reading is not ready). */
  get ready(): boolean {
    return this.#consumers.every((c) => c.joined);
  }

  async start(): Promise<void> {
    await this.#producer.start();
    await Promise.all(this.#consumers.map((c) => c.start()));
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.#consumers.map((c) => c.close()));
    await this.#producer.close();
  }

  /** Newest first. */
  deliveryEvents(): readonly (DeliveryEvent & { readonly traceparent?: string })[] {
    return [...this.#events.items()].reverse();
  }

  /** Newest first. */
  deadLetters(): readonly DlqEntry[] {
    return [...this.#dlq.items()].reverse();
  }

  /**
   * Re-publishes a dead-lettered record, as edited by the operator, into push-requests. The value
   * must now be a valid PushRequest (a record that would only be dead-lettered again is refused
   * here, with the reason); it is keyed by its target like any push request.
   */
  async replay(ref: string, value: string): Promise<{ id: string }> {
    const entry = this.#dlq.items().find((e) => e.ref === ref);
    if (!entry) throw new ReplayError(404, `no dead-lettered record ${ref} is held by this console`);
    let json: unknown;
    try {
      json = JSON.parse(value);
    } catch {
      throw new ReplayError(400, 'the edited value is not JSON');
    }
    const parsed = PushRequest.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ReplayError(
        400,
        `not a push request: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`,
      );
    }
    await this.#producer.send(this.#options.topics.pushRequests, [
      {
        key: pushTargetKey(parsed.data.target),
        value: JSON.stringify(parsed.data),
        headers: { 'pushline-replayed-from': `${this.#options.topics.pushRequestsDlq}:${ref}` },
      },
    ]);
    entry.replayed = { at: Date.now(), id: parsed.data.id };
    this.#options.logger.info({ ref, requestId: parsed.data.id }, 'dead-lettered record replayed');
    return { id: parsed.data.id };
  }

  #onEvent(record: IncomingRecord): void {
    const parsed = DeliveryEvent.safeParse(safeJson(record.value));
    if (!parsed.success) {
      this.#options.logger.warn(
        { partition: record.partition, offset: record.offset },
        'unreadable delivery event skipped',
      );
      return;
    }
    const traceparent = record.headers['traceparent'];
    this.#events.push({ ...parsed.data, ...(traceparent ? { traceparent } : {}) });
  }

  #onDeadLetter(record: IncomingRecord): void {
    const h = record.headers;
    this.#dlq.push({
      ref: `${record.partition}:${record.offset}`,
      key: record.key,
      value: record.value?.toString('utf8') ?? '',
      reason: h[DlqHeaders.reason] ?? 'unknown',
      detail: h[DlqHeaders.detail] ?? '',
      source: `${h[DlqHeaders.sourceTopic] ?? '?'}:${h[DlqHeaders.sourcePartition] ?? '?'}:${h[DlqHeaders.sourceOffset] ?? '?'}`,
      at: record.timestamp,
    });
  }
}

function safeJson(value: Buffer | null): unknown {
  if (!value) return undefined;
  try {
    return JSON.parse(value.toString('utf8'));
  } catch {
    return undefined;
  }
}
