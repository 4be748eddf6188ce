import type { RedisOfflineStore } from '@pushline/offline-store';
import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import type { ProcessorMetrics } from './metrics.ts';

export interface SweeperOptions {
  readonly store: RedisOfflineStore;
  /** Pause between sweeps. */
  readonly intervalMs: number;
  /** Expired messages handled per sweep; a full sweep runs again at once. */
  readonly batch: number;
  readonly metrics: ProcessorMetrics;
  readonly logger: Logger;
}

/**
 * Records `expired` for stored messages whose ttl ran out, every `intervalMs`. Every processor
 * runs one; the store's atomic claims make concurrent sweeps (and drains) safe. Failures are
 * logged, counted and backed off.
 */
export class Sweeper {
  readonly #options: SweeperOptions;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #closed = false;
  #failures = 0;

  constructor(options: SweeperOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'sweeper' });
  }

  start(): Promise<void> {
    this.#schedule(this.#options.intervalMs);
    return Promise.resolve();
  }

  /** Stops the loop and waits for a sweep in progress. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.#sweep().finally(() => {
        this.#running = undefined;
      });
    }, delayMs);
  }

  async #sweep(): Promise<void> {
    let next = this.#options.intervalMs;
    try {
      const expired = await this.#options.store.sweepExpired(Date.now(), this.#options.batch);
      this.#options.metrics.sweptExpired.inc(expired);
      this.#failures = 0;
      this.#options.metrics.loopRuns.inc({ loop: 'sweeper' });
      if (expired >= this.#options.batch) next = 0;
    } catch (err) {
      this.#failures++;
      this.#options.metrics.loopFailures.inc({ loop: 'sweeper' });
      next = Math.max(this.#options.intervalMs, backoffMs(this.#failures, this.#options.intervalMs, 30_000));
      this.#log.error({ err, failures: this.#failures, retryInMs: next }, 'sweeping expired messages failed');
    }
    this.#schedule(next);
  }
}
