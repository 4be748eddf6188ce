import type { IncomingRecord, Producer } from '@pushline/kafka';
import { DlqHeaders, type DlqReason } from '@pushline/protocol';

/**
 * Sends records the processor cannot use to `<prefix>push-requests.dlq`: the original key, value
 * (NULL for a tombstone) and headers, plus why and where from in the `pushline-dlq-*` headers.
 * `send` resolves once the broker has the record (acks=all), so a record counts as finished (and
 * its offset may be committed) only after it is safe in the DLQ.
 */
export class DeadLetterQueue {
  readonly #producer: Producer;
  readonly #topic: string;

  constructor(options: { producer: Producer; topic: string }) {
    this.#producer = options.producer;
    this.#topic = options.topic;
  }

  get topic(): string {
    return this.#topic;
  }

  async send(record: IncomingRecord, reason: DlqReason, detail: string): Promise<void> {
    await this.#producer.send(this.#topic, [
      {
        key: record.key,
        // A tombstone stays one: its NULL value is what was wrong with it.
        value: record.value,
        headers: {
          ...record.headers,
          [DlqHeaders.reason]: reason,
          [DlqHeaders.detail]: detail,
          [DlqHeaders.sourceTopic]: record.topic,
          [DlqHeaders.sourcePartition]: String(record.partition),
          [DlqHeaders.sourceOffset]: record.offset,
        },
      },
    ]);
  }
}
