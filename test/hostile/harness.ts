import pLimit from 'p-limit';

/**
 * What one hostile case found. `server-error`: a 5xx, an `internal` error ack, or a record the
 * processor failed on. `hang`: no answer (HTTP status, ack, DLQ record, close) before the case's
 * deadline. `wrong`: an answer, but not the documented one (a 4xx that is not problem+json, a
 * wrong status or code, accepted input that must be refused).
 */
export type Verdict =
  { readonly kind: 'ok' } | { readonly kind: 'server-error' | 'hang' | 'wrong'; readonly detail: string };

export const OK: Verdict = { kind: 'ok' };
export const serverError = (detail: string): Verdict => ({ kind: 'server-error', detail });
export const hang = (detail: string): Verdict => ({ kind: 'hang', detail });
export const wrong = (detail: string): Verdict => ({ kind: 'wrong', detail });

export interface HostileCase {
  /** The surface: http, device, kafka. */
  readonly family: string;
  /** What is sent, short enough for a report line. */
  readonly name: string;
  /** Item of issue 12 this case checks, when it checks one directly. */
  readonly item?: number;
  run(): Promise<Verdict>;
}

export interface CaseFailure {
  readonly family: string;
  readonly name: string;
  readonly item: number | undefined;
  readonly verdict: Exclude<Verdict, { kind: 'ok' }>;
}

/** Counts cases and keeps every failure, for the one-line summary and the assertion message. */
export class Tally {
  tried = 0;
  readonly failures: CaseFailure[] = [];
  crashes = 0;

  record(c: HostileCase, verdict: Verdict): void {
    this.tried++;
    if (verdict.kind !== 'ok') this.failures.push({ family: c.family, name: c.name, item: c.item, verdict });
  }

  count(kind: CaseFailure['verdict']['kind']): number {
    return this.failures.filter((f) => f.verdict.kind === kind).length;
  }

  get clean(): boolean {
    return this.failures.length === 0 && this.crashes === 0;
  }

  /** The one line the suite prints; the seed replays the generated cases. */
  summary(seed: number): string {
    return (
      `hostile inputs: ${this.tried} tried, ${this.count('server-error')} server errors, ` +
      `${this.count('hang')} hangs, ${this.crashes} crashes, ${this.count('wrong')} wrong answers (seed ${seed})`
    );
  }

  /** Failures grouped by issue item (or family), a few examples each. */
  report(examplesPerGroup = 6): string {
    const groups = new Map<string, CaseFailure[]>();
    for (const f of this.failures) {
      const group = f.item === undefined ? `${f.family} (no item)` : `item ${f.item}`;
      groups.set(group, [...(groups.get(group) ?? []), f]);
    }
    const lines: string[] = [];
    for (const [group, list] of [...groups].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))) {
      lines.push(`${group}: ${list.length} failing case(s)`);
      // Failures tied to no issue item are new findings: list them all.
      const shown = group.endsWith('(no item)') ? list.length : examplesPerGroup;
      for (const f of list.slice(0, shown)) {
        lines.push(`  [${f.verdict.kind}] ${f.family} ${f.name}: ${f.verdict.detail}`);
      }
      if (list.length > shown) lines.push(`  ... and ${list.length - shown} more`);
    }
    return lines.join('\n');
  }
}

/**
 * Runs cases at most `concurrency` at a time. Each case bounds its own requests; `caseBoundMs` is
 * a last resort so one case that forgot to cannot stall the suite (it then counts as a hang). A
 * case that throws counts as wrong: that is a bug of the case or an answer it could not read.
 */
export async function runCases(
  cases: readonly HostileCase[],
  tally: Tally,
  options: { concurrency: number; caseBoundMs: number },
): Promise<void> {
  const limit = pLimit(options.concurrency);
  await Promise.all(
    cases.map((c) =>
      limit(async () => {
        let timer: NodeJS.Timeout | undefined;
        const bound = new Promise<Verdict>((resolve) => {
          timer = setTimeout(
            () => resolve(hang(`the case itself did not finish within ${options.caseBoundMs} ms`)),
            options.caseBoundMs,
          );
        });
        try {
          const verdict = await Promise.race([
            c
              .run()
              .catch((err: unknown) =>
                wrong(`case threw: ${err instanceof Error ? err.message : String(err)}`),
              ),
            bound,
          ]);
          tally.record(c, verdict);
        } finally {
          clearTimeout(timer);
        }
      }),
    ),
  );
}

/** `[[[…0…]]]` nested `depth` arrays deep, as text (building it as a value would be recursive to print). */
export function deepArrayText(depth: number, leaf = '0'): string {
  return '['.repeat(depth) + leaf + ']'.repeat(depth);
}

/** `{"a":{"a":…}}` nested `depth` objects deep, as text. */
export function deepObjectText(depth: number, leaf = '0'): string {
  return '{"a":'.repeat(depth) + leaf + '}'.repeat(depth);
}

/** Short, printable form of any value for a case name or a failure detail. */
export function brief(value: unknown, max = 80): string {
  let text: string;
  if (typeof value === 'string') text = JSON.stringify(value);
  else if (Buffer.isBuffer(value)) text = `<${value.length} bytes>`;
  else {
    try {
      text = JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
  }
  return text.length > max ? `${text.slice(0, max)}…(${text.length} chars)` : text;
}
