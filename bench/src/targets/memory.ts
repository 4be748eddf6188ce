import { readFile, readdir } from 'node:fs/promises';

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

/** CPU milliseconds (user + system) in a /proc `stat` line, of a process or of one of its threads. */
function statCpuMs(stat: string): number {
  // Fields after the command name, which is in parentheses and may itself contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / CLOCK_TICKS_PER_S;
}

/** CPU time (user + system) a process has used so far, in milliseconds, from /proc/<pid>/stat. */
async function readCpuMs(pid: number): Promise<number> {
  return statCpuMs(await readFile(`/proc/${pid}/stat`, 'utf8'));
}

/**
 * HotSpot's JIT compiler threads, "C1 CompilerThread0", "C2 CompilerThread1", … as the kernel
 * keeps their names (15 characters).
 */
const JIT_COMPILER_THREAD = /^C[12] CompilerThre/;

/**
 * CPU milliseconds each JIT compiler thread of a JVM has used so far, by thread id; empty for a
 * process without such threads (node, Redis). A fresh Kafka broker spends a large share of its
 * CPU compiling its own code, which a long-running broker no longer does, so the bench shows it
 * apart (docs/performance.md, "What the bench charged that is not the platform's").
 */
export async function readJitCompileMs(pid: number): Promise<Map<string, number>> {
  const byThread = new Map<string, number>();
  const threads = await readdir(`/proc/${pid}/task`);
  await Promise.all(
    threads.map(async (tid) => {
      try {
        const comm = await readFile(`/proc/${pid}/task/${tid}/comm`, 'utf8');
        if (!JIT_COMPILER_THREAD.test(comm)) return;
        byThread.set(tid, statCpuMs(await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8')));
      } catch {
        // The thread ended between the listing and the read.
      }
    }),
  );
  return byThread;
}

/**
 * JIT compile time between two readings: per thread, so a compiler thread the JVM started
 * meanwhile counts whole, and one it retired meanwhile (HotSpot adds and removes them with the
 * load) is left out, which can only under-count.
 */
export function jitCompileDeltaMs(
  before: ReadonlyMap<string, number>,
  after: ReadonlyMap<string, number>,
): number {
  let ms = 0;
  for (const [tid, now] of after) ms += now - (before.get(tid) ?? 0);
  return ms;
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
  /** Of `cpuMs`, what a JVM's JIT compiler threads used (0 for other processes). */
  readonly jitMs: number;
}

/** CPU and write syscalls each process used while `fn` ran; a process that is gone counts as 0. */
export async function measureCpu<T>(
  processes: readonly ProcessRef[],
  fn: () => Promise<T>,
): Promise<{ value: T; cost: Record<string, ProcessCost> }> {
  const read = (p: ProcessRef) =>
    Promise.all([readCpuMs(p.pid), readWriteSyscalls(p.pid), readJitCompileMs(p.pid)]).catch(
      () => [Number.NaN, Number.NaN, new Map<string, number>()] as const,
    );
  const before = await Promise.all(processes.map(read));
  const value = await fn();
  const after = await Promise.all(processes.map(read));
  const cost: Record<string, ProcessCost> = {};
  processes.forEach((p, i) => {
    const d = (k: 0 | 1) => {
      const v = (after[i]?.[k] ?? Number.NaN) - (before[i]?.[k] ?? Number.NaN);
      return Number.isFinite(v) ? v : 0;
    };
    const jitMs = jitCompileDeltaMs(before[i]?.[2] ?? new Map(), after[i]?.[2] ?? new Map());
    cost[p.name] = { cpuMs: d(0), writes: d(1), jitMs: Math.max(0, Math.min(jitMs, d(0))) };
  });
  return { value, cost };
}

/** Per-message costs: CPU µs and write syscalls, in total and by process. */
export interface PerMessageCost {
  readonly cpuUs: number;
  readonly writes: number;
  /** Of `cpuUs`, JIT compilation in JVM processes (the Kafka broker); 0 for the baseline. */
  readonly jitUs: number;
  /** `jitUs` only on processes that compiled in the window. */
  readonly byProcess: Record<string, { cpuUs: number; writes: number; jitUs?: number }>;
}

export function perMessage(cost: Record<string, ProcessCost>, messages: number): PerMessageCost {
  const n = Math.max(1, messages);
  const r = (v: number) => Math.round(v * 10) / 10;
  const byProcess: Record<string, { cpuUs: number; writes: number; jitUs?: number }> = {};
  let cpu = 0;
  let writes = 0;
  let jit = 0;
  for (const [name, c] of Object.entries(cost)) {
    byProcess[name] = {
      cpuUs: r((c.cpuMs * 1000) / n),
      writes: r(c.writes / n),
      ...(c.jitMs > 0 ? { jitUs: r((c.jitMs * 1000) / n) } : {}),
    };
    cpu += c.cpuMs;
    writes += c.writes;
    jit += c.jitMs;
  }
  return { cpuUs: r((cpu * 1000) / n), writes: r(writes / n), jitUs: r((jit * 1000) / n), byProcess };
}
