import { DeliveryOutcome, DlqReason } from '@pushline/protocol';
import {
  Counter,
  Gauge,
  publishToAckHistogram,
  stageCounter,
  type Histogram,
  type Registry,
} from '@pushline/telemetry';

/**
 * The processor's metrics. Per record handed over, exactly one of dlq, duplicate, processed or
 * failed follows received, so `received = dlq + duplicate + processed + failed`; `failed` means
 * left unfinished to the partition's next owner (revoked, closing), which receives it again.
 * Retries inside one processor are `retries`, not new receipts. `processed` means every target
 * device has a terminal or stored outcome.
 */
export interface ProcessorMetrics {
  readonly records: Counter<'result'>;
  readonly dlq: Counter<'reason'>;
  readonly outcomes: Counter<'outcome' | 'target_type'>;
  readonly publishToAck: Histogram<'source'>;
  readonly inFlight: Gauge;
  readonly lag: Gauge;
  readonly loopFailures: Counter<'loop'>;
  readonly loopRuns: Counter<'loop'>;
  readonly retries: Counter<'cause'>;
  readonly claimWaits: Counter;
  readonly claimsLost: Counter;
  readonly recoveredOutcomes: Counter<'result'>;
  readonly sweptExpired: Counter;
  readonly invalidations: Counter<'type'>;
}

type RecordResult = 'received' | 'dlq' | 'duplicate' | 'processed' | 'failed';

/**
 * The closed sets of every label value: each series exists from boot at 0, so the first dead
 * letter moves `rate()` and the stage identities hold from the first scrape.
 */
const PROCESSOR_LABELS = {
  results: ['received', 'dlq', 'duplicate', 'processed', 'failed'] satisfies RecordResult[],
  outcomes: [...DeliveryOutcome.options, 'stored'],
  targetTypes: ['device', 'user', 'topic'],
  loops: [
    'sweeper',
    'cache_invalidation',
    'claim_renewal',
    'probe_redis',
    'probe_kafka',
    'consumer_crash',
    'probe_registry',
  ],
  /** Loops that run on a timer and count their completed iterations. */
  loopsWithRuns: ['sweeper'],
  retryCauses: ['redis', 'kafka', 'registry', 'record'],
  invalidationTypes: ['connected', 'disconnected', 'invalid'],
  recoveredResults: ['published', 'missing'],
} as const;

/** What the processor's gauges read when scraped. */
export interface ProcessorGauges {
  inFlight(): number;
  lag(): number;
  /** Per dependency, whether it answers. */
  dependencies(): Readonly<Record<'redis' | 'kafka' | 'registry', boolean>>;
  /** Per assigned partition with work in hand. */
  partitions(): readonly {
    readonly partition: number;
    readonly unfinished: number;
    readonly oldestUnfinishedAgeS: number;
    readonly stalledS: number;
  }[];
}

export function createProcessorMetrics(registry: Registry, gauges: ProcessorGauges): ProcessorMetrics {
  const registers = [registry];
  const L = PROCESSOR_LABELS;
  new Gauge({
    name: 'pushline_processor_dependency_up',
    help: 'Whether a dependency answers (1) or the processor has paused for it (0): redis, kafka, registry (0 while Redis’s lost entries are written back).',
    labelNames: ['dependency'],
    registers,
    collect() {
      for (const [dependency, up] of Object.entries(gauges.dependencies()))
        this.set({ dependency }, up ? 1 : 0);
    },
  });
  const perPartition = (
    name: string,
    help: string,
    read: (p: ReturnType<ProcessorGauges['partitions']>[number]) => number,
  ) =>
    new Gauge({
      name,
      help,
      labelNames: ['partition'],
      registers,
      collect() {
        // Partitions come and go with rebalances: only the ones held now are exported.
        this.reset();
        for (const p of gauges.partitions()) this.set({ partition: String(p.partition) }, read(p));
      },
    });
  perPartition(
    'pushline_processor_partition_unfinished',
    'Records of a held push-requests partition taken in and not finished (running, or waiting behind an earlier record of their key).',
    (p) => p.unfinished,
  );
  perPartition(
    'pushline_processor_partition_oldest_unfinished_seconds',
    'Age of the oldest unfinished record of a held partition (the committed offset waits for it); 0 when none.',
    (p) => p.oldestUnfinishedAgeS,
  );
  perPartition(
    'pushline_processor_partition_stalled_seconds',
    'How long a held partition has had work in hand without finishing any of it; 0 while it makes progress. Past PUSHLINE_PROCESSOR_STALL_AFTER_MS /readyz fails.',
    (p) => p.stalledS,
  );
  const metrics: ProcessorMetrics = {
    records: stageCounter({
      name: 'pushline_processor_records_total',
      help: 'Push-request records by result: received = dlq + duplicate + processed + failed (failed ones are redelivered).',
      labels: { result: L.results },
      registry,
    }),
    dlq: stageCounter({
      name: 'pushline_processor_dlq_total',
      help: 'Records sent to the dead-letter topic, by reason.',
      labels: { reason: DlqReason.options },
      registry,
    }),
    outcomes: stageCounter({
      name: 'pushline_processor_outcomes_total',
      help: 'Delivery events recorded by the processor, by outcome (stored: kept for an offline device) and target type.',
      labels: { outcome: L.outcomes, target_type: L.targetTypes },
      registry,
    }),
    publishToAck: publishToAckHistogram(registry),
    inFlight: new Gauge({
      name: 'pushline_processor_in_flight',
      help: 'Push requests being processed right now.',
      registers,
      collect() {
        this.set(gauges.inFlight());
      },
    }),
    lag: new Gauge({
      name: 'pushline_processor_consumer_lag',
      help: 'Records behind the end of the assigned push-requests partitions, as of their last batches.',
      registers,
      collect() {
        this.set(gauges.lag());
      },
    }),
    loopFailures: stageCounter({
      name: 'pushline_processor_loop_failures_total',
      help: 'Failures of background work, by loop (sweeper, cache_invalidation, claim_renewal, drain).',
      labels: { loop: L.loops },
      registry,
    }),
    loopRuns: stageCounter({
      name: 'pushline_processor_loop_runs_total',
      help: 'Completed iterations of timer-driven background loops (sweeper), so a stalled loop shows as a flat line.',
      labels: { loop: L.loopsWithRuns },
      registry,
    }),
    retries: stageCounter({
      name: 'pushline_processor_record_retries_total',
      help: 'Attempts of a record that failed and were retried in place, by cause: redis, kafka or registry (a dependency failed or the registry was being restored; not counted against the record), record (decoding or handling threw).',
      labels: { cause: L.retryCauses },
      registry,
    }),
    claimWaits: new Counter({
      name: 'pushline_processor_claim_waits_total',
      help: 'Requests found in progress elsewhere (rebalance overlap, duplicate record) and waited for.',
      registers,
    }),
    claimsLost: new Counter({
      name: 'pushline_processor_claims_lost_total',
      help: 'Held request claims a renewal found gone (expired while Redis was unreachable, or taken over); the record claims again before going on.',
      registers,
    }),
    recoveredOutcomes: stageCounter({
      name: 'pushline_processor_recovered_outcomes_total',
      help: 'Events of outcomes a processor recorded and died (or gave up) before marking done, as the next holder found them: published (already in Kafka, not written again) or missing (written by the next holder).',
      labels: { result: L.recoveredResults },
      registry,
    }),
    sweptExpired: new Counter({
      name: 'pushline_processor_swept_expired_total',
      help: 'Stored messages the sweeper recorded as expired.',
      registers,
    }),
    invalidations: stageCounter({
      name: 'pushline_processor_cache_invalidations_total',
      help: 'Connection events applied to the device-location cache, by type (invalid: unreadable record).',
      labels: { type: L.invalidationTypes },
      registry,
    }),
  };
  return metrics;
}
