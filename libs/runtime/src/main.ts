import type { Logger } from '@pushline/telemetry';

export interface RunningService {
  close(): Promise<void>;
}

/**
 * Runs a service's boot function and owns the process: a boot failure logs and exits 1;
 * SIGTERM or SIGINT closes the service once and exits 0 (1 if closing failed). A second
 * signal while closing exits at once, for an operator who really means it.
 */
export function runMain(options: {
  name: string;
  logger: Logger;
  boot: () => Promise<RunningService>;
}): void {
  const { logger } = options;
  let service: RunningService | undefined;
  let stopping = false;

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal while stopping; exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, `${options.name} stopping`);
    const closing = service ? service.close() : Promise.resolve();
    closing.then(
      () => {
        logger.info(`${options.name} stopped`);
        logger.flush();
        process.exitCode = 0;
      },
      (err: unknown) => {
        logger.error({ err }, `${options.name} failed to stop cleanly`);
        logger.flush();
        process.exitCode = 1;
      },
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  options.boot().then(
    (running) => {
      service = running;
      if (stopping) void running.close();
    },
    (err: unknown) => {
      logger.fatal({ err }, `${options.name} failed to start`);
      logger.flush();
      process.exit(1);
    },
  );
}
