import { z } from 'zod';

/**
 * The bench's result file. The JSON in bench/results/ is the source of truth; the Markdown table
 * and the SVG chart are rendered from it, and the CI smoke test parses it with this schema.
 */

const num = z.number().nullable();

export const Row = z.object({
  /** Stable id for lookups across runs, e.g. `direct.c100.throughput`. */
  key: z.string(),
  metric: z.string(),
  unit: z.string(),
  baseline: num,
  pushline: num,
  /** pushline / baseline, when both are measured. */
  ratio: num,
  better: z.enum(['higher', 'lower']),
});
export type Row = z.infer<typeof Row>;

const Bar = z.object({ group: z.string(), series: z.string(), value: z.number() });
export const Chart = z.object({
  title: z.string(),
  unit: z.string(),
  kind: z.enum(['throughput', 'latency', 'memory']),
  bars: z.array(Bar),
});
export type Chart = z.infer<typeof Chart>;

export const ScenarioResult = z.object({
  id: z.number().int().min(1).max(9),
  name: z.string(),
  title: z.string(),
  status: z.enum(['ok', 'skipped', 'failed']),
  /** Why it was skipped or failed. */
  reason: z.string().optional(),
  durationMs: z.number(),
  rows: z.array(Row),
  charts: z.array(Chart),
  notes: z.array(z.string()),
  /** Raw counts (outcomes, errors) per target, for digging into a surprising number. */
  details: z.record(z.string(), z.unknown()),
});
export type ScenarioResult = z.infer<typeof ScenarioResult>;

export const TargetCheck = z.object({
  goal: z.string(),
  measured: z.string(),
  /** null when the scenario did not produce the numbers. */
  pass: z.boolean().nullable(),
});
export type TargetCheck = z.infer<typeof TargetCheck>;

export const BenchResult = z.object({
  schemaVersion: z.literal(1),
  startedAt: z.string(),
  finishedAt: z.string(),
  commit: z.string(),
  dirty: z.boolean(),
  machine: z.object({
    cpus: z.number().int(),
    cpuModel: z.string(),
    totalMemBytes: z.number(),
    node: z.string(),
    platform: z.string(),
  }),
  options: z.object({
    scenarios: z.array(z.number().int()),
    devices: z.number().int(),
    stormDevices: z.number().int(),
    smoke: z.boolean(),
  }),
  scenarios: z.array(ScenarioResult),
  targets: z.array(TargetCheck),
});
export type BenchResult = z.infer<typeof BenchResult>;

export function row(
  key: string,
  metric: string,
  unit: string,
  values: { baseline?: number | null | undefined; pushline?: number | null | undefined },
  better: 'higher' | 'lower',
): Row {
  const baseline = values.baseline ?? null;
  const pushline = values.pushline ?? null;
  const ratio = baseline !== null && pushline !== null && baseline !== 0 ? round2(pushline / baseline) : null;
  return { key, metric, unit, baseline, pushline, ratio, better };
}

function round2(v: number): number {
  return Math.round(v * 100) / 100;
}
