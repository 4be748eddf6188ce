/** Every long-lived component: `start()` once, `close()` any number of times. */
export interface Component {
  start(): Promise<void>;
  close(): Promise<void>;
}

export interface CleanupStep {
  readonly name: string;
  run(): Promise<void> | void;
}

/** Thrown by `runCleanup` when some steps failed; every step has still been run. */
export class CleanupError extends AggregateError {
  override readonly name = 'CleanupError';
}

/**
 * Runs the steps in order and keeps going when one fails, so a broken Kafka client never
 * leaves a Redis connection or a timer behind. Throws one error naming every failed step.
 */
export async function runCleanup(steps: readonly CleanupStep[]): Promise<void> {
  const errors: Error[] = [];
  for (const step of steps) {
    try {
      await step.run();
    } catch (err) {
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
