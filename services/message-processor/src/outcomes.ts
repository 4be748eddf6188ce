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
    if (events.length === 0) return;
    const checked = events.map((ev) => DeliveryEvent.parse(ev));
    await withSpan(
      this.#tracer,
      `send ${this.#topic}`,
      {
        kind: SpanKind.PRODUCER,
        attributes: {
          'messaging.system': 'kafka',
          'messaging.operation.type': 'send',
          'messaging.destination.name': this.#topic,
          'messaging.batch.message_count': checked.length,
        },
      },
      async () => {
        const headers = injectTraceHeaders();
        await this.#producer.send(
          this.#topic,
          checked.map((ev) => ({
            key: ev.deviceId ?? ev.target.id,
            value: JSON.stringify(ev),
            headers: headers as Record<string, string>,
          })),
        );
      },
    );
    for (const ev of checked) {
      this.#metrics.outcomes.inc({ outcome: ev.stored ? 'stored' : ev.outcome, target_type: ev.target.type });
      if (ev.outcome === 'delivered' && ev.terminal && ev.deliveredCount !== 0) {
        this.#metrics.publishToAck.observe({ source: ev.source }, ev.latencyMs / 1000);
      }
    }
  }
}
