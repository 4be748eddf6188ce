import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { openSync, closeSync } from 'node:fs';
import type { z } from 'zod';

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

/**
 * Servers must never outlive the bench, even when it throws or is interrupted: the driver's
 * main turns SIGINT/SIGTERM into process.exit, which lands here. (Kafka and Redis are guarded by
 * @pushline/devstack itself; load generators exit when their IPC channel closes.)
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

/** A server process that announces itself with one JSON line on stdout. */
export interface AnnouncedProcess<T> {
  readonly pid: number;
  readonly announcement: T;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

export async function spawnAnnounced<T>(
  script: URL,
  env: NodeJS.ProcessEnv,
  schema: z.ZodType<T>,
  logFile: string,
  timeoutMs = 30_000,
): Promise<AnnouncedProcess<T>> {
  installExitHook();
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, [script.pathname], { env, stdio: ['ignore', 'pipe', fd] });
  closeSync(fd);
  live.add(child);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      live.delete(child);
      resolve();
    }),
  );
  const stop = async (graceMs = 5000): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  try {
    const announcement = await firstMatchingLine(child, schema, timeoutMs);
    return { pid: child.pid as number, announcement, stop };
  } catch (err) {
    await stop(0);
    throw err;
  }
}

function firstMatchingLine<T>(child: ChildProcess, schema: z.ZodType<T>, timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const timer = setTimeout(() => done(new Error(`no announcement within ${timeoutMs} ms`)), timeoutMs);
    const onExit = (code: number | null) => done(new Error(`exited with code ${code} before announcing`));
    function done(err: Error | undefined, value?: T): void {
      clearTimeout(timer);
      child.off('exit', onExit);
      lines.removeAllListeners('line');
      // Keep draining stdout so the child never blocks on a full pipe.
      child.stdout?.resume();
      if (err) reject(err);
      else resolve(value as T);
    }
    child.once('exit', onExit);
    lines.on('line', (line) => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        return;
      }
      const result = schema.safeParse(parsed);
      if (result.success) done(undefined, result.data);
    });
  });
}

/** A long-running service process whose output goes to a log file. */
export interface ServiceProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  readonly exited: Promise<void>;
  isRunning(): boolean;
  /** Exit code and signal once the process has exited. */
  exitInfo(): { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** kill -9: what a crash looks like to the rest of the platform. */
  kill(): Promise<void>;
  /** SIGTERM, then SIGKILL after `graceMs`; says whether the SIGKILL was needed. */
  stop(graceMs?: number): Promise<{ killed: boolean; ms: number }>;
}

export function spawnService(
  name: string,
  script: string,
  env: NodeJS.ProcessEnv,
  logFile: string,
): ServiceProcess {
  installExitHook();
  const fd = openSync(logFile, 'a');
  const child = spawn(process.execPath, [script], { env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  live.add(child);
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => {
      live.delete(child);
      resolve();
    });
  });
  const isRunning = () => child.exitCode === null && child.signalCode === null;
  return {
    name,
    pid: child.pid as number,
    logFile,
    exited,
    isRunning,
    exitInfo: () => (isRunning() ? undefined : { code: child.exitCode, signal: child.signalCode }),
    async kill() {
      if (isRunning()) child.kill('SIGKILL');
      await exited;
    },
    async stop(graceMs = 15_000) {
      const started = performance.now();
      if (!isRunning()) return { killed: false, ms: 0 };
      let killed = false;
      child.kill('SIGTERM');
      const timer = setTimeout(() => {
        killed = true;
        child.kill('SIGKILL');
      }, graceMs);
      await exited;
      clearTimeout(timer);
      return { killed, ms: performance.now() - started };
    },
  };
}

/** Polls `<url>/readyz` until it answers 200, the process exits, or the deadline passes. */
export async function waitReady(service: ServiceProcess, opsUrl: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!service.isRunning())
      throw new Error(`${service.name} exited during start-up; see ${service.logFile}`);
    try {
      const res = await fetch(`${opsUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    // Polling pace only; the loop ends on readiness, exit or the deadline.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${service.name} was not ready within ${timeoutMs} ms; see ${service.logFile}`);
}
