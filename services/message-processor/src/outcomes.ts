import type { Producer } from '@pushline/kafka';
import { DeliveryEvent } from '@pushline/protocol';
import { SpanKind, injectTraceHeaders, withSpan, type Tracer } from '@pushline/telemetry';
import type { ProcessorMetrics } from './metrics.ts';

/**
 * Writes delivery events to `<prefix>delivery-events`, keyed by device id (topic id for
 * broadcasts, target id when no device is known), so one device's events stay in order.
 * `record` resolves once the broker has every event (acks=all): callers mark a request done and
 * commit its offset only after that.
 */
export class OutcomeRecorder {
  readonly #producer: Producer;
  readonly #topic: string;
  readonly #metrics: ProcessorMetrics;
  readonly #tracer: Tracer;

  constructor(options: { producer: Producer; topic: string; metrics: ProcessorMetrics; tracer: Tracer }) {
    this.#producer = options.producer;
    this.#topic = options.topic;
    this.#metrics = options.metrics;
    this.#tracer = options.tracer;
  }

  async record(events: readonly DeliveryEvent[]): Promise<void> {
    await this.recordBatch([{ events, headers: injectTraceHeaders() as Record<string, string> }]);
  }

  /**
   * The events as they are written: checked against the schema once, serialized once (the
   * committer records the same strings in the request ledger before it produces them).
   */
  serialize(events: readonly DeliveryEvent[]): string[] {
    return events.map((ev) => JSON.stringify(DeliveryEvent.parse(ev)));
  }

  /**
   * Writes the events of many requests in one produce, in the given order; each request's events
   * carry its own trace headers (those of its `process` span). `serialized` is `serialize(events)`
   * when the caller has it already.
   */
  async recordBatch(
    entries: readonly {
      readonly events: readonly DeliveryEvent[];
      readonly serialized?: readonly string[];
      readonly headers: Record<string, string>;
    }[],
  ): Promise<void> {
    const records = entries.flatMap((entry) => {
      const values = entry.serialized ?? this.serialize(entry.events);
      return entry.events.map((ev, i) => ({ ev, value: values[i] as string, headers: entry.headers }));
    });
    if (records.length === 0) return;
    await withSpan(
      this.#tracer,
      `send ${this.#topic}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'send',
          'messaging.destination.name': this.#topic,
          'messaging.batch.message_count': records.length,
        },
      },
      async () => {
        await this.#producer.send(
          this.#topic,
          records.map(({ ev, value, headers }) => ({
            key: ev.deviceId ?? ev.target.id,
            value,
            headers,
          })),
        );
      },
    );
    for (const { ev } of records) {
      this.#metrics.outcomes.inc({ outcome: ev.stored ? 'stored' : ev.outcome, target_type: ev.target.type });
      // One sample per device ack of the async path. A topic broadcast acks nobody (its
      // deliveredCount is a fan-out, not a device ack), and a stored message's drain is observed
      // by the offline store wherever it runs, so neither is counted here.
      if (ev.outcome === 'delivered' && ev.terminal && ev.source === 'async' && ev.target.type !== 'topic') {
        this.#metrics.publishToAck.observe({ source: 'async' }, ev.latencyMs / 1000);
      }
    }
  }
}
