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
 * The processor's metrics. Per record, exactly one of dlq, duplicate, processed or failed follows
 * received, so `received = dlq + duplicate + processed + failed`; a failed record is redelivered
 * and received again. `processed` means every target device has a terminal or stored outcome.
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
  readonly claimWaits: Counter;
  readonly sweptExpired: Counter;
  readonly invalidations: Counter<'type'>;
}

export type RecordResult = 'received' | 'dlq' | 'duplicate' | 'processed' | 'failed';

/**
 * The closed sets of every label value: each series exists from boot at 0, so the first dead
 * letter moves `rate()` and the stage identities hold from the first scrape.
 */
export const PROCESSOR_LABELS = {
  results: ['received', 'dlq', 'duplicate', 'processed', 'failed'] satisfies RecordResult[],
  outcomes: [...DeliveryOutcome.options, 'stored'],
  targetTypes: ['device', 'user', 'topic'],
  loops: ['batch', 'sweeper', 'cache_invalidation'],
  /** Loops that run on a timer and count their completed iterations. */
  loopsWithRuns: ['sweeper'],
  invalidationTypes: ['connected', 'disconnected', 'invalid'],
} as const;

export function createProcessorMetrics(
  registry: Registry,
  gauges: { inFlight: () => number; lag: () => number },
): ProcessorMetrics {
  const registers = [registry];
  const L = PROCESSOR_LABELS;
  return {
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
      help: 'Records behind the end of the assigned push-requests partitions, as of their last batches (self-reported; the canary measures lag from the broker).',
      registers,
      collect() {
        this.set(gauges.lag());
      },
    }),
    loopFailures: stageCounter({
      name: 'pushline_processor_loop_failures_total',
      help: 'Failures of background work, by loop (batch, sweeper, cache_invalidation).',
      labels: { loop: L.loops },
      registry,
    }),
    loopRuns: stageCounter({
      name: 'pushline_processor_loop_runs_total',
      help: 'Completed iterations of timer-driven background loops (sweeper), so a stalled loop shows as a flat line.',
      labels: { loop: L.loopsWithRuns },
      registry,
    }),
    claimWaits: new Counter({
      name: 'pushline_processor_claim_waits_total',
      help: 'Requests found in progress elsewhere (rebalance overlap, duplicate record) and waited for.',
      registers,
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
}
