import type { DeliveryEvent } from '@pushline/protocol';
import type { Logger } from '@pushline/telemetry';
import type { OutcomeRecorder } from './outcomes.ts';
import type { RequestLedger } from './request-ledger.ts';

interface Pending {
  readonly requestId: string;
  readonly events: readonly DeliveryEvent[];
  readonly headers: Record<string, string>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Group commit of request outcomes: every request handled while the previous commit was in flight
 * goes into the next one, which writes all their events in one produce (acks=all) and then marks
 * them all done in one Redis round trip. A caller keeps its in-flight permit until its commit
 * resolves, so a crash between the produce and the `done` marks still affects at most the
 * in-flight bound of requests, as with one commit per request.
 */
export class OutcomeCommitter {
  readonly #outcomes: OutcomeRecorder;
  readonly #ledger: RequestLedger;
  readonly #log: Logger;
  #queue: Pending[] = [];
  #running = false;

  constructor(options: { outcomes: OutcomeRecorder; ledger: RequestLedger; logger: Logger }) {
    this.#outcomes = options.outcomes;
    this.#ledger = options.ledger;
    this.#log = options.logger;
  }

  /** Resolves once the events are in Kafka and the request is marked done. */
  commit(
    requestId: string,
    events: readonly DeliveryEvent[],
    headers: Record<string, string>,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ requestId, events, headers, resolve, reject });
      // Requests that finish in the same tick share the commit.
      if (!this.#running) {
        this.#running = true;
        setImmediate(() => void this.#drain());
      }
    });
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const group = this.#queue;
      this.#queue = [];
      try {
        await this.#outcomes.recordBatch(group.map((p) => ({ events: p.events, headers: p.headers })));
        await this.#ledger.completeMany(group.map((p) => p.requestId));
        for (const p of group) p.resolve();
      } catch (err) {
        this.#log.warn({ err, requests: group.length }, 'committing request outcomes failed');
        for (const p of group) p.reject(err);
      }
    }
    this.#running = false;
  }
}
