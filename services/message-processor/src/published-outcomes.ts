import type { Admin } from '@pushline/kafka';
import { DeliveryEvent, type RecordedOutcome } from '@pushline/protocol';
import { MicroBatcher } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import { DependencyError } from './dependency-gate.ts';

/**
 * How far before a recorded outcome's `at` the scan starts. The events' record timestamps are
 * taken after `at` by the same process, so this only covers a broker that stamps records with its
 * own clock (`message.timestamp.type=LogAppendTime`) running slightly behind.
 */
const CLOCK_SLACK_MS = 5_000;

/** Checks arriving within this long of each other share one scan (a takeover brings many at once). */
const GATHER_MS = 50;

export interface PublishedOutcomesOptions {
  readonly admin: Pick<Admin, 'recordsSince'>;
  /** The delivery-events topic. */
  readonly topic: string;
  readonly logger: Logger;
  /** Longest one scan may take before its checks fail (as Kafka's failure). Default 30 000 ms. */
  readonly scanTimeoutMs?: number;
}

interface Check {
  readonly recorded: RecordedOutcome;
  readonly resolve: (missing: DeliveryEvent[]) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Tells which events of a recorded outcome (a processor recorded them in the request ledger, then
 * died or gave up before marking the request done) are not in the delivery-events topic, by
 * reading the topic from when they were recorded. An event is recognised by its request, device,
 * outcome and `at`, which a republished copy keeps and a new attempt could not have.
 */
export class PublishedOutcomes {
  readonly #options: PublishedOutcomesOptions;
  readonly #log: Logger;
  readonly #batcher = new MicroBatcher<Check>({
    flush: (checks) => this.#scan(checks),
    onError: (err, checks) => {
      for (const c of checks) c.reject(new DependencyError('kafka', err));
    },
    lingerMs: GATHER_MS,
  });

  constructor(options: PublishedOutcomesOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'published-outcomes' });
  }

  /** The recorded events the topic does not have; rejects with `DependencyError('kafka')`. */
  missing(recorded: RecordedOutcome): Promise<DeliveryEvent[]> {
    if (recorded.events.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      if (!this.#batcher.add({ recorded, resolve, reject }))
        reject(new DependencyError('kafka', new Error('the processor is closing')));
    });
  }

  /** Settles the checks waiting now; later ones fail (the processor is closing). */
  close(): Promise<void> {
    return this.#batcher.close();
  }

  async #scan(checks: readonly Check[]): Promise<void> {
    const wanted = new Set<string>();
    let since = Number.POSITIVE_INFINITY;
    for (const { recorded } of checks) {
      since = Math.min(since, recorded.at - CLOCK_SLACK_MS);
      for (const ev of recorded.events) wanted.add(identity(ev));
    }
    const found = new Set<string>();
    let scanned = 0;
    await this.#options.admin.recordsSince(
      this.#options.topic,
      since,
      (record) => {
        scanned++;
        if (record.value === null) return;
        let value: unknown;
        try {
          value = JSON.parse(record.value.toString('utf8'));
        } catch {
          return; // not an event: nothing of ours
        }
        const ev = DeliveryEvent.safeParse(value);
        if (!ev.success) return;
        const id = identity(ev.data);
        if (wanted.has(id)) found.add(id);
      },
      this.#options.scanTimeoutMs,
    );
    let missing = 0;
    for (const check of checks) {
      const left = check.recorded.events.filter((ev) => !found.has(identity(ev)));
      missing += left.length;
      check.resolve(left);
    }
    this.#log.info(
      { requests: checks.length, events: wanted.size, found: found.size, missing, scanned, since },
      'checked which recorded outcomes a dead holder published',
    );
  }
}

function identity(ev: DeliveryEvent): string {
  return [ev.requestId, ev.deviceId ?? '', ev.target.type, ev.target.id, ev.outcome, ev.at].join('\n');
}
