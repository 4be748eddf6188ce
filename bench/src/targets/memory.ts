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
async function readCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may itself contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / CLOCK_TICKS_PER_S;
}

/** Write syscalls (write, writev) a process has made so far, from /proc/<pid>/io. */
async function readWriteSyscalls(pid: number): Promise<number> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8');
  const match = /^syscw:\s+(\d+)$/m.exec(io);
  if (!match?.[1]) throw new Error(`no syscw for pid ${pid}`);
  return Number(match[1]);
}

export interface ProcessRef {
  readonly name: string;
  readonly pid: number;
}

export interface ProcessCost {
  /** CPU milliseconds (user + system). */
  readonly cpuMs: number;
  /** Write syscalls; on loopback each one also pays for the receiver's TCP processing. */
  readonly writes: number;
}

/** CPU and write syscalls each process used while `fn` ran; a process that is gone counts as 0. */
export async function measureCpu<T>(
  processes: readonly ProcessRef[],
  fn: () => Promise<T>,
): Promise<{ value: T; cost: Record<string, ProcessCost> }> {
  const read = (p: ProcessRef) =>
    Promise.all([readCpuMs(p.pid), readWriteSyscalls(p.pid)]).catch(() => [Number.NaN, Number.NaN]);
  const before = await Promise.all(processes.map(read));
  const value = await fn();
  const after = await Promise.all(processes.map(read));
  const cost: Record<string, ProcessCost> = {};
  processes.forEach((p, i) => {
    const d = (k: 0 | 1) => {
      const v = (after[i]?.[k] ?? Number.NaN) - (before[i]?.[k] ?? Number.NaN);
      return Number.isFinite(v) ? v : 0;
    };
    cost[p.name] = { cpuMs: d(0), writes: d(1) };
  });
  return { value, cost };
}

/** Per-message costs: CPU µs and write syscalls, in total and by process. */
export interface PerMessageCost {
  readonly cpuUs: number;
  readonly writes: number;
  readonly byProcess: Record<string, { cpuUs: number; writes: number }>;
}

export function perMessage(cost: Record<string, ProcessCost>, messages: number): PerMessageCost {
  const n = Math.max(1, messages);
  const r = (v: number) => Math.round(v * 10) / 10;
  const byProcess: Record<string, { cpuUs: number; writes: number }> = {};
  let cpu = 0;
  let writes = 0;
  for (const [name, c] of Object.entries(cost)) {
    byProcess[name] = { cpuUs: r((c.cpuMs * 1000) / n), writes: r(c.writes / n) };
    cpu += c.cpuMs;
    writes += c.writes;
  }
  return { cpuUs: r((cpu * 1000) / n), writes: r(writes / n), byProcess };
}
