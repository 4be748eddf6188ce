import { randomBytes } from 'node:crypto';
import type { Consumer, KafkaClient } from '@pushline/kafka';
import { DeliveryEvent, DlqHeaders } from '@pushline/protocol';
import type { TopicNames } from '@pushline/config';

/** Header the suite puts on every poison record, so its DLQ copy can be told apart. */
export const POISON_HEADER = 'chaos-poison';

/** A delivery event as the suite read it: one Kafka record (re-reads of the same offset are dropped). */
export interface ObservedEvent {
  readonly event: DeliveryEvent;
  readonly partition: number;
  readonly offset: string;
}

export interface DlqEntry {
  readonly poisonId: string | undefined;
  readonly reason: string | undefined;
  readonly detail: string | undefined;
}

/**
 * Reads `<prefix>delivery-events` and the DLQ from the beginning, in a group of its own, for the
 * whole run. Kafka redelivers after a broker restart or a consumer crash; records are kept once
 * per (partition, offset), so a second terminal event the suite reports is a second record the
 * platform wrote, never a re-read.
 */
export class Observer {
  readonly #byRequest = new Map<string, ObservedEvent[]>();
  readonly #seenOffsets = new Set<string>();
  readonly #dlq: DlqEntry[] = [];
  readonly #dlqOffsets = new Set<string>();
  readonly #waiters = new Set<() => void>();
  /** Request ids seen on `<prefix>push-requests`: whether an accepted request reached the log. */
  readonly #inLog = new Set<string>();
  readonly #consumer: Consumer;
  /** Records of the events topic that were not a valid DeliveryEvent. */
  invalidEvents = 0;

  constructor(kafka: KafkaClient, topics: TopicNames) {
    this.#consumer = kafka.consumer({
      groupId: `chaos-observer-${randomBytes(4).toString('hex')}`,
      topics: [topics.deliveryEvents, topics.pushRequestsDlq, topics.pushRequests],
      fromBeginning: true,
      sessionTimeoutMs: 10_000,
      handleBatch: async (batch) => {
        for (const r of batch.records) {
          const key = `${r.topic}:${r.partition}:${r.offset}`;
          if (r.topic === topics.pushRequests) {
            const id = requestIdOf(r.value);
            if (id !== undefined) this.#inLog.add(id);
            continue;
          }
          if (r.topic === topics.pushRequestsDlq) {
            if (this.#dlqOffsets.has(key)) continue;
            this.#dlqOffsets.add(key);
            this.#dlq.push({
              poisonId: r.headers[POISON_HEADER],
              reason: r.headers[DlqHeaders.reason],
              detail: r.headers[DlqHeaders.detail],
            });
            continue;
          }
          if (this.#seenOffsets.has(key)) continue;
          this.#seenOffsets.add(key);
          let parsed;
          try {
            parsed = DeliveryEvent.safeParse(JSON.parse(r.value?.toString('utf8') ?? 'null'));
          } catch {
            parsed = undefined;
          }
          if (!parsed?.success) {
            this.invalidEvents++;
            continue;
          }
          const list = this.#byRequest.get(parsed.data.requestId) ?? [];
          list.push({ event: parsed.data, partition: r.partition, offset: r.offset });
          this.#byRequest.set(parsed.data.requestId, list);
        }
        for (const w of [...this.#waiters]) w();
      },
    });
  }

  start(): Promise<void> {
    return this.#consumer.start();
  }

  close(): Promise<void> {
    return this.#consumer.close();
  }

  events(requestId: string): readonly ObservedEvent[] {
    return this.#byRequest.get(requestId) ?? [];
  }

  /** Every event read so far, by request id. */
  all(): ReadonlyMap<string, readonly ObservedEvent[]> {
    return this.#byRequest;
  }

  /** Whether a push request with this id is on the push-requests topic. */
  inRequestLog(requestId: string): boolean {
    return this.#inLog.has(requestId);
  }

  dlq(): readonly DlqEntry[] {
    return this.#dlq;
  }

  /** Resolves true once `done()` holds after some batch (checked at once too), false at the deadline. */
  async until(done: () => boolean, timeoutMs: number): Promise<boolean> {
    if (done()) return true;
    return new Promise<boolean>((resolve) => {
      const check = () => {
        if (!done()) return;
        finish(true);
      };
      const timer = setTimeout(() => finish(false), timeoutMs);
      const finish = (value: boolean) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        resolve(value);
      };
      this.#waiters.add(check);
    });
  }
}

/** The `id` of a push-request record, when it is JSON with a string id (poison is skipped). */
function requestIdOf(value: Buffer | null): string | undefined {
  if (!value || value[0] !== 0x7b) return undefined;
  try {
    const id = (JSON.parse(value.toString('utf8')) as { id?: unknown }).id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}
