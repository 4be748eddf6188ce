import { MicroBatcher } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import type { OutgoingRecord, Producer } from './types.ts';

export interface BufferedPublisherOptions {
  readonly producer: Producer;
  readonly topic: string;
  readonly logger: Logger;
  /** Records sent in one request. Default 500. */
  readonly maxBatch?: number;
  /** Longest a record waits before its batch is sent. Default 20 ms. */
  readonly lingerMs?: number;
  /** Records held while Kafka is slow or down; past it the oldest are dropped and counted. Default 100 000. */
  readonly maxQueued?: number;
  /** Sends of one batch before it is dropped. Default 5. */
  readonly maxAttempts?: number;
  /** Called for every record dropped, with why. */
  readonly onDrop?: (count: number, reason: 'queue_full' | 'send_failed') => void;
  /** Called after every send, so callers can count what reached Kafka. */
  readonly onSent?: (count: number) => void;
}

/**
 * Hands records to Kafka in the background. `publish` never waits and never throws, so a slow
 * broker cannot stall the socket path that produces connection events; what cannot be sent is
 * retried with backoff, then counted and dropped.
 *
 * One batch is sent at a time. Records that arrive during a send wait out their own linger instead
 * of following at once in a request of a few records (only a full batch goes at once): the broker
 * pays per request, so small trailing batches cost it about as much as full ones
 * (docs/performance.md, connection events).
 */
export class BufferedPublisher {
  readonly #options: Required<Omit<BufferedPublisherOptions, 'onDrop' | 'onSent'>> &
    Pick<BufferedPublisherOptions, 'onDrop' | 'onSent'>;
  readonly #batcher: MicroBatcher<OutgoingRecord>;

  constructor(options: BufferedPublisherOptions) {
    this.#options = { maxBatch: 500, lingerMs: 20, maxQueued: 100_000, maxAttempts: 5, ...options };
    const { onDrop } = this.#options;
    this.#batcher = new MicroBatcher({
      maxBatch: this.#options.maxBatch,
      lingerMs: this.#options.lingerMs,
      maxQueued: this.#options.maxQueued,
      onDrop: () => onDrop?.(1, 'queue_full'),
      flush: (batch) => this.#sendWithRetry(batch),
      // Never reached: a batch that fails every attempt is dropped and counted there.
      onError: (err, batch) => {
        this.#options.logger.error({ err, topic: this.#options.topic }, 'publishing to Kafka failed');
        onDrop?.(batch.length, 'send_failed');
      },
    });
  }

  get queued(): number {
    return this.#batcher.queued;
  }

  publish(record: OutgoingRecord): void {
    if (!this.#batcher.add(record)) this.#options.onDrop?.(1, 'queue_full');
  }

  /** Resolves when everything queued so far has been sent or dropped. */
  flush(): Promise<void> {
    return this.#batcher.flush();
  }

  /** Flushes what is queued, then refuses new records. Idempotent. */
  close(): Promise<void> {
    return this.#batcher.close();
  }

  async #sendWithRetry(batch: OutgoingRecord[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#options.producer.send(this.#options.topic, batch);
        this.#options.onSent?.(batch.length);
        return;
      } catch (err) {
        this.#options.logger.warn(
          { err, topic: this.#options.topic, records: batch.length, attempt },
          'publishing to Kafka failed',
        );
        if (attempt >= this.#options.maxAttempts) {
          this.#options.onDrop?.(batch.length, 'send_failed');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(5_000, 100 * 2 ** attempt)));
      }
    }
  }
}
