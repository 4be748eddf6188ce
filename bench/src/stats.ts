/** Latency and rate summaries. Percentiles are computed from raw samples (nearest rank), merged across processes. */

export interface LatencySummary {
  readonly count: number;
  readonly min: number;
  readonly mean: number;
  readonly p50: number;
  readonly p95: number;
  readonly p99: number;
  readonly max: number;
}

const EMPTY_SUMMARY: LatencySummary = { count: 0, min: 0, mean: 0, p50: 0, p95: 0, p99: 0, max: 0 };

/** Nearest-rank percentile of an ascending array. */
function rank(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? 0;
}

export function summarize(samples: readonly number[] | Float64Array): LatencySummary {
  if (samples.length === 0) return EMPTY_SUMMARY;
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    min: round(sorted[0] ?? 0),
    mean: round(sum / sorted.length),
    p50: round(rank(sorted, 50)),
    p95: round(rank(sorted, 95)),
    p99: round(rank(sorted, 99)),
    max: round(sorted[sorted.length - 1] ?? 0),
  };
}

/** Three significant decimals are plenty for milliseconds and keep the JSON readable. */
export function round(v: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

export function perSecond(count: number, ms: number): number {
  return ms <= 0 ? 0 : round((count * 1000) / ms, 1);
}

/** Wall-clock milliseconds with sub-ms precision, comparable across processes on one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Keeps at most `cap` samples with reservoir sampling, so a long run stays bounded in memory
 * while its percentiles stay unbiased.
 */
export class SampleReservoir {
  readonly #cap: number;
  readonly #samples: number[] = [];
  #seen = 0;

  constructor(cap = 100_000) {
    this.#cap = cap;
  }

  add(v: number): void {
    this.#seen++;
    if (this.#samples.length < this.#cap) {
      this.#samples.push(v);
      return;
    }
    const j = Math.floor(Math.random() * this.#seen);
    if (j < this.#cap) this.#samples[j] = v;
  }

  get seen(): number {
    return this.#seen;
  }

  values(): number[] {
    return this.#samples.slice();
  }

  clear(): void {
    this.#samples.length = 0;
    this.#seen = 0;
  }
}
