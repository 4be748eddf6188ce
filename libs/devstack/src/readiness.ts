import { readFile } from 'node:fs/promises';
import type { GuardedProcess } from './guard.ts';
import { delay, errorMessage, withLogTails } from './util.ts';

/** The server lost a race for its port between our choosing it and its binding it: start again. */
export class BindConflict extends Error {}

export interface WaitForReadyOptions {
  readonly proc: GuardedProcess;
  /** e.g. "Kafka", for messages. */
  readonly name: string;
  readonly deadline: number;
  readonly startTimeoutMs: number;
  readonly logs: readonly string[];
  /** Pace of re-probing; the wait ends on readiness, exit or the deadline, never on time alone. */
  readonly intervalMs: number;
  /** Resolves true when the server serves, or a description of what it answered instead. */
  readonly probe: (timeoutMs: number) => Promise<true | string>;
}

/**
 * Probes a freshly spawned server until it serves. An early exit becomes an error carrying the
 * log tails (a `BindConflict` when the logs say the port was taken); so does the deadline.
 */
export async function waitForReady(o: WaitForReadyOptions): Promise<void> {
  let lastProblem = 'no answer yet';
  for (;;) {
    const exit = o.proc.exitInfo();
    if (exit !== undefined) {
      const message = `${o.name} exited (code ${exit.code}, signal ${exit.signal}) before it was ready`;
      if (await logMentions(o.logs, 'Address already in use')) {
        throw new BindConflict(await withLogTails(message, o.logs));
      }
      throw new Error(await withLogTails(message, o.logs));
    }
    const remaining = o.deadline - Date.now();
    if (remaining <= 0) {
      throw new Error(
        await withLogTails(
          `${o.name} did not become ready within ${o.startTimeoutMs} ms (last probe: ${lastProblem})`,
          o.logs,
        ),
      );
    }
    try {
      const result = await o.probe(remaining);
      if (result === true) return;
      lastProblem = result;
    } catch (err) {
      lastProblem = errorMessage(err);
    }
    await delay(Math.min(o.intervalMs, Math.max(o.deadline - Date.now(), 0)), o.proc.exited);
  }
}

async function logMentions(files: readonly string[], needle: string): Promise<boolean> {
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.includes(needle)) return true;
  }
  return false;
}
