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

/** Linux's USER_HZ; 100 on every mainstream kernel configuration. */
const CLOCK_TICKS_PER_S = 100;

/** CPU time (user + system) a process has used so far, in milliseconds, from /proc/<pid>/stat. */
export async function readCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may itself contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / CLOCK_TICKS_PER_S;
}

export interface ProcessRef {
  readonly name: string;
  readonly pid: number;
}

/** CPU milliseconds each process used while `fn` ran; processes that are gone count as 0. */
export async function measureCpu<T>(
  processes: readonly ProcessRef[],
  fn: () => Promise<T>,
): Promise<{ value: T; cpuMs: Record<string, number> }> {
  const read = (p: ProcessRef) => readCpuMs(p.pid).catch(() => Number.NaN);
  const before = await Promise.all(processes.map(read));
  const value = await fn();
  const after = await Promise.all(processes.map(read));
  const cpuMs: Record<string, number> = {};
  processes.forEach((p, i) => {
    const d = (after[i] ?? Number.NaN) - (before[i] ?? Number.NaN);
    cpuMs[p.name] = Number.isFinite(d) ? d : 0;
  });
  return { value, cpuMs };
}
