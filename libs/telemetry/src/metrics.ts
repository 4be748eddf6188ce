import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export { Counter, Gauge, Histogram, Registry };

/**
 * Labels Prometheus attaches to every target itself: a sample carrying one of them is renamed
 * `exported_<label>` at scrape time, so a service must never set them (it uses `instance_id`).
 */
export const RESERVED_LABELS: readonly string[] = ['instance', 'job'];

/** A service asked for a default label that Prometheus owns. */
export class ReservedLabelError extends Error {
  override readonly name = 'ReservedLabelError';
  readonly label: string;
  constructor(label: string) {
    super(`metric label "${label}" is set by Prometheus on every target; use "${label}_id" instead`);
    this.label = label;
  }
}

/**
 * Each service instance owns its registry (no prom-client globals), so several instances can
 * run in one process in tests without their counters mixing.
 */
export function createMetricsRegistry(labels: Record<string, string>, withDefaults = true): Registry {
  for (const label of Object.keys(labels))
    if (RESERVED_LABELS.includes(label)) throw new ReservedLabelError(label);
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: 'pushline_process_' });
  return registry;
}

/** Latency buckets in seconds from 0.5 ms to 30 s; device acks and pushes sit in the low end. */
export const LATENCY_BUCKETS_S = [
  0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1, 2, 5, 10, 30,
];

/**
 * Buckets for request accepted → device ack, which includes the time a message waited in Kafka
 * behind an outage or in the offline store for its device: the low end of `LATENCY_BUCKETS_S`,
 * then minutes, hours and days up to 30 days, the longest `ttlSeconds` the platform accepts, so
 * a 90 s delay after an outage reads as 90 s and not as the top bucket.
 */
export const END_TO_END_BUCKETS_S = [
  ...LATENCY_BUCKETS_S,
  60,
  120,
  300,
  600,
  1800,
  3600,
  14_400,
  86_400,
  604_800,
  2_592_000,
];
