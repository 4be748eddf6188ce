import { Counter, Histogram, type Registry } from 'prom-client';
import { END_TO_END_BUCKETS_S } from './metrics.ts';

/** Every value each label can take; all combinations are exported from the start at 0. */
export type LabelValues<L extends string> = { readonly [K in L]: readonly string[] };

export interface StageCounterOptions<L extends string> {
  /** `pushline_<area>_<thing>_total`. */
  readonly name: string;
  readonly help: string;
  readonly labels: LabelValues<L>;
  readonly registry: Registry;
}

export interface StageHistogramOptions<L extends string> extends StageCounterOptions<L> {
  readonly buckets: readonly number[];
}

/**
 * A counter whose every label combination exists from boot at 0. This is the rule for every
 * labelled counter of the platform: stage counters are compared with each other (received =
 * routed + ...), `rate()` cannot see the increment that creates a series, and a panel over a
 * series that does not exist yet shows "No data" instead of 0.
 */
export function stageCounter<L extends string>(options: StageCounterOptions<L>): Counter<L> {
  const labelNames = Object.keys(options.labels) as L[];
  const counter = new Counter<L>({
    name: options.name,
    help: options.help,
    labelNames,
    registers: [options.registry],
  });
  for (const combination of combinations(options.labels, labelNames)) counter.inc(combination, 0);
  return counter;
}

/** A histogram whose every label combination exists from boot with empty buckets (see `stageCounter`). */
export function stageHistogram<L extends string>(options: StageHistogramOptions<L>): Histogram<L> {
  const labelNames = Object.keys(options.labels) as L[];
  const histogram = new Histogram<L>({
    name: options.name,
    help: options.help,
    labelNames,
    buckets: [...options.buckets],
    registers: [options.registry],
  });
  if (labelNames.length > 0)
    for (const combination of combinations(options.labels, labelNames)) histogram.zero(combination);
  return histogram;
}

/** The values of `pushline_publish_to_ack_seconds`'s `source` label. */
export const PUBLISH_TO_ACK_SOURCES = ['async', 'offline'] as const;

/**
 * `pushline_publish_to_ack_seconds`: request accepted (`createdAt`) → device ack, recorded where
 * the ack is known: by the processor for async deliveries, by the offline store (in whichever
 * service drains it) for stored messages. Several components of one service share the family,
 * so this returns the one already registered on `registry`, if any.
 */
export function publishToAckHistogram(registry: Registry): Histogram<'source'> {
  const existing = registry.getSingleMetric('pushline_publish_to_ack_seconds');
  if (existing) return existing as Histogram<'source'>;
  return stageHistogram({
    name: 'pushline_publish_to_ack_seconds',
    help: 'From a push request being accepted (createdAt) to the device acking it, by source: async (processor) or offline (a stored message drained on reconnect). Topic broadcasts are not included.',
    labels: { source: PUBLISH_TO_ACK_SOURCES },
    buckets: END_TO_END_BUCKETS_S,
    registry,
  });
}

function combinations<L extends string>(values: LabelValues<L>, names: readonly L[]): Record<L, string>[] {
  let out: Partial<Record<L, string>>[] = [{}];
  for (const name of names) {
    out = out.flatMap((partial) => values[name].map((v) => ({ ...partial, [name]: v })));
  }
  return out as Record<L, string>[];
}
