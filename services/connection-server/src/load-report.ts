import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { DeviceRegistry, ServerLoad } from '@pushline/registry';
import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import { countedRegistryOp, type ConnectionServerMetrics } from './metrics.ts';

export interface LoadReporterOptions {
  readonly registry: DeviceRegistry;
  readonly metrics: ConnectionServerMetrics;
  readonly logger: Logger;
  readonly intervalMs: number;
  readonly serverId: string;
  /** Where the server is reached (known once it listens). */
  readonly urls: () => Pick<ServerLoad, 'serverUrl' | 'deviceUrl' | 'directUrl'>;
  readonly connections: () => number;
  readonly pendingHandshakes: () => number;
  readonly draining: () => boolean;
}

/**
 * Writes this server's load to the registry every interval (connections, p99 event-loop delay
 * over the interval, memory), for load-aware balancing and for picking broadcast servers. The
 * report expires after three missed intervals, so a dead server drops out by itself.
 */
export class LoadReporter {
  readonly #options: LoadReporterOptions;
  readonly #loopDelay: ReturnType<typeof monitorEventLoopDelay> = monitorEventLoopDelay({ resolution: 10 });
  #timer: NodeJS.Timeout | undefined;
  #inFlight: Promise<void> | undefined;
  #failures = 0;
  #closed = false;
  #cpuAt = { usage: process.cpuUsage(), wallNs: process.hrtime.bigint() };

  constructor(options: LoadReporterOptions) {
    this.#options = options;
  }

  get ttlSeconds(): number {
    return Math.max(1, Math.ceil((3 * this.#options.intervalMs) / 1000));
  }

  /** Writes a first report at once (so the server is listed before it takes traffic), then loops. */
  async start(): Promise<void> {
    this.#loopDelay.enable();
    await this.report();
    this.#schedule(this.#options.intervalMs);
  }

  /** Writes one report now; failures are logged, counted and retried by the loop. */
  async report(): Promise<void> {
    const usage = process.cpuUsage();
    const wallNs = process.hrtime.bigint();
    const busyUs = usage.user - this.#cpuAt.usage.user + (usage.system - this.#cpuAt.usage.system);
    const wallUs = Number(wallNs - this.#cpuAt.wallNs) / 1000;
    this.#cpuAt = { usage, wallNs };
    const load: ServerLoad = {
      serverId: this.#options.serverId,
      ...this.#options.urls(),
      connections: this.#options.connections(),
      eventLoopDelayMs: this.#loopDelay.count > 0 ? this.#loopDelay.percentile(99) / 1e6 : 0,
      rssBytes: process.memoryUsage.rss(),
      heapUsedBytes: process.memoryUsage().heapUsed,
      pendingHandshakes: this.#options.pendingHandshakes(),
      cpuPercent: wallUs > 0 ? Math.round((busyUs / wallUs) * 1000) / 10 : 0,
      draining: this.#options.draining(),
      at: Date.now(),
    };
    this.#loopDelay.reset();
    const run = countedRegistryOp(this.#options.metrics, 'report_load', () =>
      this.#options.registry.reportLoad(load, this.ttlSeconds),
    );
    this.#inFlight = run.then(
      () => undefined,
      () => undefined,
    );
    await run;
  }

  /** Stops the loop and removes this server's report, so routers stop picking it. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#loopDelay.disable();
    await this.#inFlight;
    await countedRegistryOp(this.#options.metrics, 'remove_load', () =>
      this.#options.registry.removeLoad(this.#options.serverId),
    );
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.report().then(
        () => {
          this.#failures = 0;
          this.#options.metrics.loopRuns.inc({ loop: 'load_report' });
          this.#schedule(this.#options.intervalMs);
        },
        (err: unknown) => {
          this.#failures++;
          this.#options.metrics.loopFailures.inc({ loop: 'load_report' });
          this.#options.logger.warn({ err, attempt: this.#failures }, 'load report failed; retrying');
          this.#schedule(Math.min(this.#options.intervalMs, backoffMs(this.#failures, 200, 10_000) + 100));
        },
      );
    }, ms);
    this.#timer.unref();
  }
}
