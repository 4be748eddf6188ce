import { readFile } from 'node:fs/promises';

/** Resident set size of a process from /proc, which needs no cooperation from the process. */
export async function readRssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match?.[1]) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** A sample value from a Prometheus text exposition, by metric name (any labels). */
export function promValue(text: string, metric: string): number | undefined {
  const re = new RegExp(`^${metric}(?:\\{[^}]*\\})?\\s+([0-9.eE+-]+)$`, 'm');
  const match = re.exec(text);
  return match?.[1] === undefined ? undefined : Number(match[1]);
}
