import type { Logger, Registry, TracingHandle, Tracer } from '@pushline/telemetry';
import { closeOnce, runCleanup, type CleanupStep, type Component } from './lifecycle.ts';

/** What a service's composition root (`assemble<Service>`) takes from main.ts or a test. */
export interface AssemblyOptions {
  readonly logger: Logger;
  /** Default: a registry with the process metrics, labelled with the service and its instance id. */
  readonly metrics?: Registry;
  /** Default: the service's `pushline-<service>` tracer of the global provider. */
  readonly tracer?: Tracer;
  /** Started by main.ts and handed over: closed last, so the spans of the shutdown are exported. */
  readonly tracing?: TracingHandle;
}

/**
 * The start()/close() pair of a composition root. `close` runs the steps once, in order, then
 * closes the tracing handed over; a `start` that fails closes everything before it rethrows, so
 * neither main.ts nor a test has to clean up a half-started service.
 */
export function assemblyLifecycle(options: {
  readonly start: () => Promise<void>;
  /** Stop accepting and drain first, then consumers and adapters, producers, clients. */
  readonly steps: readonly CleanupStep[];
  readonly logger: Logger;
  readonly tracing?: TracingHandle | undefined;
}): Component {
  const { tracing, logger } = options;
  const close = closeOnce(() =>
    runCleanup([...options.steps, { name: 'tracing', run: () => tracing?.close() }]),
  );
  return {
    close,
    async start() {
      try {
        await options.start();
      } catch (err) {
        await close().catch((closeErr: unknown) =>
          logger.error({ err: closeErr }, 'cleanup after a failed start failed'),
        );
        throw err;
      }
    },
  };
}
