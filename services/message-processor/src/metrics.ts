import { Counter, Gauge, Histogram, LATENCY_BUCKETS_S, type Registry } from '@pushline/telemetry';

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
  readonly claimWaits: Counter;
  readonly sweptExpired: Counter;
  readonly invalidations: Counter<'type'>;
}

export type RecordResult = 'received' | 'dlq' | 'duplicate' | 'processed' | 'failed';

export function createProcessorMetrics(
  registry: Registry,
  gauges: { inFlight: () => number; lag: () => number },
): ProcessorMetrics {
  const registers = [registry];
  return {
    records: new Counter({
      name: 'pushline_processor_records_total',
      help: 'Push-request records by result: received = dlq + duplicate + processed + failed (failed ones are redelivered).',
      labelNames: ['result'],
      registers,
    }),
    dlq: new Counter({
      name: 'pushline_processor_dlq_total',
      help: 'Records sent to the dead-letter topic, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    outcomes: new Counter({
      name: 'pushline_processor_outcomes_total',
      help: 'Delivery events recorded by the processor, by outcome (stored: kept for an offline device) and target type.',
      labelNames: ['outcome', 'target_type'],
      registers,
    }),
    publishToAck: new Histogram({
      name: 'pushline_publish_to_ack_seconds',
      help: 'From a push request being accepted (createdAt) to the device acking it, by source (async, offline).',
      labelNames: ['source'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    }),
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
    loopFailures: new Counter({
      name: 'pushline_processor_loop_failures_total',
      help: 'Failures of background work, by loop (batch, sweeper, cache_invalidation, drain).',
      labelNames: ['loop'],
      registers,
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
    invalidations: new Counter({
      name: 'pushline_processor_cache_invalidations_total',
      help: 'Connection events applied to the device-location cache, by type (invalid: unreadable record).',
      labelNames: ['type'],
      registers,
    }),
  };
}
