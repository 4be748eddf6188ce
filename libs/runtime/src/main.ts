import type { Logger } from '@pushline/telemetry';
import { activeCleanupSteps, cleanupStepTimeoutChannel, CleanupStepTimeoutError } from './lifecycle.ts';

export interface RunningService {
  close(): Promise<void>;
}

/** Used when a service passes no deadline: below an orchestrator's default kill grace (30 s). */
export const DEFAULT_SHUTDOWN_DEADLINE_MS = 25_000;

/**
 * After close() settled, how long the process may take to exit by itself (logs flushed, sockets
 * released) before it is made to: whatever still runs then was abandoned by a step that hung.
 */
const EXIT_GRACE_AFTER_CLOSE_MS = 2_000;

/**
 * Runs a service's boot function and owns the process: a boot failure logs and exits 1;
 * SIGTERM or SIGINT closes the service once and exits 0 (1 if closing failed). A second
 * signal while closing exits at once, for an operator who really means it. If closing has not
 * finished `shutdownDeadlineMs` after the first signal, the process logs the cleanup steps still
 * running (the ones that hung) and exits 1; a cleanup step abandoned past its own bound is logged
 * when it is abandoned.
 */
export function runMain(options: {
  name: string;
  logger: Logger;
  boot: () => Promise<RunningService>;
  /** Default DEFAULT_SHUTDOWN_DEADLINE_MS (PUSHLINE_SHUTDOWN_DEADLINE_MS in the services). */
  shutdownDeadlineMs?: number;
}): void {
  const { logger } = options;
  const deadlineMs = options.shutdownDeadlineMs ?? DEFAULT_SHUTDOWN_DEADLINE_MS;
  // Set right after the signal handlers are installed (a signal cannot arrive in between: signals
  // are delivered through the event loop), so a signal during boot is never the default exit.
  const boot: { running?: Promise<RunningService> } = {};
  let stopping = false;
  let stopped = false;

  cleanupStepTimeoutChannel.subscribe((message) => {
    if (message instanceof CleanupStepTimeoutError) {
      logger.error({ step: message.step, timeoutMs: message.timeoutMs }, 'shutdown step hung; abandoned it');
    }
  });

  const exitNow = (why: string, fields: Record<string, unknown>) => {
    logger.error({ ...fields, hung: activeCleanupSteps() }, why);
    logger.flush();
    process.exit(1);
  };

  /** close() settled: the process should now exit on its own; if left work keeps it alive, it is made to. */
  const closed = (exitCode: number) => {
    stopped = true;
    process.exitCode = exitCode;
    setTimeout(() => {
      logger.warn(
        { resources: process.getActiveResourcesInfo() },
        `${options.name} closed, but abandoned work keeps the process alive; exiting`,
      );
      logger.flush();
      process.exit(exitCode);
    }, EXIT_GRACE_AFTER_CLOSE_MS).unref();
  };

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      exitNow('second signal while stopping; exiting now', { signal });
      return;
    }
    stopping = true;
    logger.info({ signal, deadlineMs }, `${options.name} stopping`);
    // Unreferenced: a close that finished must not wait for the deadline. A close whose pending work
    // is gone (nothing left to wait on) is caught by beforeExit below.
    setTimeout(
      () => exitNow(`${options.name} did not stop within its shutdown deadline; exiting`, { deadlineMs }),
      deadlineMs,
    ).unref();
    // A signal during boot closes what the boot built, once it is built (a failed boot exits 1).
    (boot.running ?? Promise.resolve(undefined))
      .then((service) => service?.close())
      .then(
        () => {
          logger.info(`${options.name} stopped`);
          logger.flush();
          closed(0);
        },
        (err: unknown) => {
          logger.error({ err }, `${options.name} failed to stop cleanly`);
          logger.flush();
          closed(1);
        },
      );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.once('beforeExit', () => {
    // The event loop ran dry while a close was still pending: a step awaited something that can
    // never happen. Exiting 0 here would hide it.
    if (stopping && !stopped) exitNow(`${options.name} shutdown stalled with nothing left to wait on`, {});
  });
  boot.running = options.boot();
  boot.running.catch((err: unknown) => {
    logger.fatal({ err }, `${options.name} failed to start`);
    logger.flush();
    process.exit(1);
  });
}
