import { Counter, type Registry } from 'prom-client';

export interface StageCounterOptions<L extends string> {
  /** `pushline_<area>_<thing>_total`. */
  readonly name: string;
  readonly help: string;
  /** Every value each label can take; all combinations are exported from the start at 0. */
  readonly labels: { readonly [K in L]: readonly string[] };
  readonly registry: Registry;
}

/**
 * A counter for one stage of the message pipeline whose every label combination exists from
 * boot at 0. Stage counters are compared with each other (received = routed + ...), and a series
 * that only appears after its first event would make those sums and `rate()` queries lie.
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

function combinations<L extends string>(
  values: { readonly [K in L]: readonly string[] },
  names: readonly L[],
): Record<L, string>[] {
  let out: Partial<Record<L, string>>[] = [{}];
  for (const name of names) {
    out = out.flatMap((partial) => values[name].map((v) => ({ ...partial, [name]: v })));
  }
  return out as Record<L, string>[];
}
