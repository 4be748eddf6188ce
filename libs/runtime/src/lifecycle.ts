import { AsyncLocalStorage } from 'node:async_hooks';
import { channel } from 'node:diagnostics_channel';

/** Every long-lived component: `start()` once, `close()` any number of times. */
export interface Component {
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface CleanupStep {
  readonly name: string;
  run(): Promise<void> | void;
  /**
   * Longest the step may take; past it the step is abandoned (it keeps running, unwatched), counted
   * as failed, and the next step runs. Default: the `stepTimeoutMs` of the runCleanup call.
   * `Infinity` only for a step that is itself a sequence of bounded steps (a component's close()
   * made of runCleanup steps), whose bound is the sum of theirs.
   */
  readonly timeoutMs?: number;
}

export interface RunCleanupOptions {
  /** Bound of a step that names none. Default DEFAULT_CLEANUP_STEP_TIMEOUT_MS. */
  readonly stepTimeoutMs?: number;
}

/**
 * Bound of one cleanup step unless it names its own: far above what a healthy close takes (a
 * Redis QUIT, a producer flush), well below an orchestrator's kill grace (30 s by default).
 */
export const DEFAULT_CLEANUP_STEP_TIMEOUT_MS = 10_000;

/** Thrown by `runCleanup` when some steps failed; every step has still been run. */
export class CleanupError extends AggregateError {
  override readonly name = 'CleanupError';
}

/** A cleanup step that did not finish within its bound; the steps after it ran anyway. */
export class CleanupStepTimeoutError extends Error {
  override readonly name = 'CleanupStepTimeoutError';
  /** The step and the steps it runs in, outermost first: `connection server › kafka producer`. */
  readonly step: string;
  readonly timeoutMs: number;
  constructor(step: string, timeoutMs: number) {
    super(`${step}: did not finish within ${timeoutMs} ms; abandoned`);
    this.step = step;
    this.timeoutMs = timeoutMs;
  }
}

/**
 * Published on when a step is abandoned, so the process owner (runMain) can log it at once with its
 * logger; a library has none of its own. Message: the CleanupStepTimeoutError.
 */
export const cleanupStepTimeoutChannel = channel('pushline:cleanup:step-timeout');

/** The path of the step being run, so nested runCleanup calls name their steps in full. */
const currentStep = new AsyncLocalStorage<string>();
/** Steps that started and have neither finished nor been abandoned, by a per-run id. */
const running = new Map<number, { readonly step: string; readonly startedAt: number }>();
let nextRunId = 0;

/**
 * The cleanup steps running now (nested ones named by their path), oldest first, and for how long:
 * what a shutdown deadline reports as the step that hung.
 */
export function activeCleanupSteps(now = Date.now()): { step: string; runningMs: number }[] {
  return [...running.values()].map((r) => ({ step: r.step, runningMs: now - r.startedAt }));
}

async function runStep(step: CleanupStep, defaultTimeoutMs: number): Promise<void> {
  const parent = currentStep.getStore();
  const path = parent === undefined ? step.name : `${parent} › ${step.name}`;
  const timeoutMs = step.timeoutMs ?? defaultTimeoutMs;
  const id = nextRunId++;
  running.set(id, { step: path, startedAt: Date.now() });
  let timer: NodeJS.Timeout | undefined;
  try {
    const run = currentStep.run(path, () => Promise.resolve().then(() => step.run()));
    if (!Number.isFinite(timeoutMs)) {
      await run;
      return;
    }
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new CleanupStepTimeoutError(path, timeoutMs);
        if (cleanupStepTimeoutChannel.hasSubscribers) cleanupStepTimeoutChannel.publish(err);
        reject(err);
      }, timeoutMs);
    });
    // An abandoned step may still fail later; nobody is waiting for it any more.
    run.catch(() => {});
    await Promise.race([run, expired]);
  } finally {
    clearTimeout(timer);
    running.delete(id);
  }
}

/**
 * Runs the steps in order and keeps going when one fails or hangs past its bound, so a broken
 * Kafka client never leaves a Redis connection or a timer behind and a dead dependency cannot hold
 * a shutdown forever. Throws one error naming every failed step.
 */
export async function runCleanup(
  steps: readonly CleanupStep[],
  options: RunCleanupOptions = {},
): Promise<void> {
  const stepTimeoutMs = options.stepTimeoutMs ?? DEFAULT_CLEANUP_STEP_TIMEOUT_MS;
  const errors: Error[] = [];
  for (const step of steps) {
    try {
      await runStep(step, stepTimeoutMs);
    } catch (err) {
      if (err instanceof CleanupStepTimeoutError) {
        errors.push(err);
        continue;
      }
      const cause = err instanceof Error ? err : new Error(String(err));
      errors.push(new Error(`${step.name}: ${cause.message}`, { cause }));
    }
  }
  if (errors.length > 0) {
    throw new CleanupError(errors, `cleanup failed: ${errors.map((e) => e.message).join('; ')}`);
  }
}

/** Wraps a close function so that every call after the first returns the first call's promise. */
export function closeOnce(close: () => Promise<void>): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () => (closing ??= close());
}

/** Exponential backoff with full jitter, for background loops that hit an error. */
export function backoffMs(attempt: number, baseMs = 100, maxMs = 30_000): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20));
  return Math.floor(Math.random() * ceiling);
}
