import { setTimeout as sleep } from 'node:timers/promises';
import type { DeliveryEvent } from '@pushline/protocol';
import { backoffMs, MicroBatcher } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import { DependencyError, type Dependency, type DependencyGate } from './dependency-gate.ts';
import type { OutcomeRecorder } from './outcomes.ts';
import type { Claim, RequestLedger } from './request-ledger.ts';

interface Pending {
  readonly claim: Claim;
  readonly events: readonly DeliveryEvent[];
  /** The events as written to the ledger and to Kafka (`OutcomeRecorder.serialize`). */
  readonly serialized: readonly string[];
  readonly headers: Record<string, string>;
  /** Aborted when the record is revoked or the processor closes: its commit stops retrying. */
  readonly signal: AbortSignal;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

export interface OutcomeCommitterOptions {
  readonly outcomes: OutcomeRecorder;
  readonly ledger: RequestLedger;
  readonly gate: DependencyGate;
  readonly logger: Logger;
  /** Called for every failed attempt of a stage, by the dependency that failed. */
  readonly onRetry?: (dependency: Dependency) => void;
}

/**
 * Group commit of request outcomes: every request handled while the previous commit was in flight
 * goes into the next one, which records all their events in the request ledger (one Redis round
 * trip), writes them in one produce (acks=all) and then marks them all done (one more). No request
 * waits for another's delivery, only for the commit in flight, so there is no barrier between
 * records.
 *
 * Recording before producing closes the window a processor killed during the produce used to
 * leave: the request was not done, so the next owner delivered it again and wrote a second
 * terminal event if the first produce had landed. Now the next owner finds the recorded events,
 * publishes only those the log does not have, and never delivers again
 * (docs/delivery-guarantees.md).
 *
 * The delivery already happened when a request gets here, so a failing Kafka or Redis is retried
 * in place (with backoff, closing the dependency gate so no new record starts meanwhile) rather
 * than failing the request, whose redelivery would deliver it again. Only a request whose record
 * was revoked or whose processor is closing stops retrying; it rejects with `DependencyError` and
 * its record is left to the next owner. A produce that failed may still have written its events,
 * so a retried produce can write them twice (docs/delivery-guarantees.md).
 */
export class OutcomeCommitter {
  readonly #options: OutcomeCommitterOptions;
  readonly #log: Logger;
  /** Requests that finish in the same turn, or while a commit is in flight, share the next commit. */
  readonly #batcher = new MicroBatcher<Pending>({
    flush: (group) => this.#commitGroup(group),
    // Never reached: a stage retries until it succeeds or every request in it gave up.
    onError: (err, group) => {
      for (const p of group) p.reject(err);
    },
  });

  constructor(options: OutcomeCommitterOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'outcome-committer' });
  }

  /** Resolves once the events are in Kafka and the request is marked done. */
  commit(
    claim: Claim,
    events: readonly DeliveryEvent[],
    headers: Record<string, string>,
    signal: AbortSignal,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const serialized = this.#options.outcomes.serialize(events);
      this.#batcher.add({ claim, events, serialized, headers, signal, resolve, reject });
    });
  }

  async #commitGroup(group: readonly Pending[]): Promise<void> {
    const recorded = await this.#stage(group, 'redis', (live) =>
      this.#options.ledger.recordOutcomes(
        live.filter((p) => p.events.length > 0),
        Date.now(),
      ),
    );
    const produced = await this.#stage(recorded, 'kafka', (live) =>
      this.#options.outcomes.recordBatch(
        live.map((p) => ({ events: p.events, serialized: p.serialized, headers: p.headers })),
      ),
    );
    const completed = await this.#stage(produced, 'redis', (live) =>
      this.#options.ledger.completeMany(live.map((p) => p.claim)),
    );
    for (const p of completed) p.resolve();
  }

  /** Runs one stage for the group until it succeeds; returns the members it succeeded for. */
  async #stage(
    group: readonly Pending[],
    dependency: Dependency,
    run: (live: readonly Pending[]) => Promise<void>,
  ): Promise<readonly Pending[]> {
    let live = group;
    for (let attempt = 1; live.length > 0; attempt++) {
      try {
        await run(live);
        if (attempt > 1) this.#options.gate.up(dependency);
        return live;
      } catch (err) {
        this.#options.onRetry?.(dependency);
        this.#options.gate.down(dependency, err);
        const gaveUp = live.filter((p) => p.signal.aborted);
        live = live.filter((p) => !p.signal.aborted);
        for (const p of gaveUp) p.reject(new DependencyError(dependency, err));
        this.#log.warn(
          { err, dependency, requests: live.length, gaveUp: gaveUp.length, attempt },
          dependency === 'kafka'
            ? 'writing delivery events failed; retrying'
            : 'recording outcomes or marking requests done failed; retrying',
        );
        if (live.length > 0) await sleep(Math.max(50, backoffMs(attempt, 100, 2_000)));
      }
    }
    return live;
  }
}
