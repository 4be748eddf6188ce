import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export { Counter, Gauge, Histogram, Registry };

/**
 * Each service instance owns its registry (no prom-client globals), so several instances can
 * run in one process in tests without their counters mixing.
 */
export function createMetricsRegistry(labels: Record<string, string>, withDefaults = true): Registry {
  const registry = new Registry();
  registry.setDefaultLabels(labels);
  if (withDefaults) collectDefaultMetrics({ register: registry, prefix: 'pushline_process_' });
  return registry;
}

/** Latency buckets in seconds from 0.5 ms to 30 s; device acks and pushes sit in the low end. */
export const LATENCY_BUCKETS_S = [
  0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.5, 1, 2, 5, 10, 30,
];
