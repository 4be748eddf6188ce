import type { DeviceLocator } from '@pushline/delivery';
import type { Consumer, KafkaClient, RecordBatch } from '@pushline/kafka';
import { ConnectionEvent } from '@pushline/protocol';
import type { Logger } from '@pushline/telemetry';
import type { ProcessorMetrics } from './metrics.ts';

export interface CacheInvalidatorOptions {
  readonly kafka: KafkaClient;
  /** `<prefix>connection-events`. */
  readonly topic: string;
  /** Unique per processor instance: every instance must see every event for its own cache. */
  readonly groupId: string;
  readonly locator: DeviceLocator;
  readonly metrics: ProcessorMetrics;
  readonly logger: Logger;
}

/**
 * Keeps the processor's device-location cache correct: every connect and disconnect on
 * `<prefix>connection-events` is applied to the locator, so a device that moved is not delivered
 * to its old server first. Reads from the latest offset in a consumer group of its own (a cache
 * only needs what happens from now on; older state is read from the registry on a miss). A bad
 * record is counted and skipped, never retried: the cache has other ways to heal (TTL,
 * `not_connected` answers).
 */
export class CacheInvalidator {
  readonly #options: CacheInvalidatorOptions;
  readonly #consumer: Consumer;
  readonly #log: Logger;

  constructor(options: CacheInvalidatorOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'cache-invalidation' });
    this.#consumer = options.kafka.consumer({
      groupId: options.groupId,
      topics: [options.topic],
      fromBeginning: false,
      partitionsConsumedConcurrently: 1,
      handleBatch: async (batch) => this.#apply(batch),
      // Crashes kafkajs restarts from by itself are logged only (topics still being created at boot).
      onCrash: (_err, restartedBy) => {
        if (restartedBy === 'consumer') options.metrics.loopFailures.inc({ loop: 'consumer_crash' });
      },
    });
  }

  get joined(): boolean {
    return this.#consumer.joined;
  }

  async start(): Promise<void> {
    await this.#consumer.start();
  }

  async close(): Promise<void> {
    await this.#consumer.close();
  }

  #apply(batch: RecordBatch): void {
    for (const record of batch.records) {
      let parsed;
      try {
        parsed = ConnectionEvent.safeParse(JSON.parse(record.value?.toString('utf8') ?? 'null'));
      } catch {
        parsed = undefined;
      }
      if (!parsed?.success) {
        this.#options.metrics.invalidations.inc({ type: 'invalid' });
        this.#options.metrics.loopFailures.inc({ loop: 'cache_invalidation' });
        this.#log.warn(
          { partition: record.partition, offset: record.offset },
          'unreadable connection event skipped',
        );
        continue;
      }
      this.#options.locator.applyConnectionEvent(parsed.data);
      this.#options.metrics.invalidations.inc({ type: parsed.data.type });
    }
  }
}
