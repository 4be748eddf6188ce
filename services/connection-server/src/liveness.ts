import type { DeviceRegistry } from '@pushline/registry';
import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import type { DeviceConnection } from './connection.ts';
import type { LocalDevices } from './local-devices.ts';
import { countedRegistryOp, type ConnectionServerMetrics } from './metrics.ts';

export interface LivenessOptions {
  readonly devices: LocalDevices;
  readonly registry: DeviceRegistry;
  readonly metrics: ConnectionServerMetrics;
  readonly logger: Logger;
  readonly serverId: string;
  readonly ttlSeconds: number;
  /** Period of the registry refresh loop. */
  readonly refreshMs: number;
  /** Time between a recycle hint and the close; a record must outlive it. */
  readonly closeGraceMs: number;
  /** Close connections without application traffic for this long; 0 disables. */
  readonly idleTimeoutMs: number;
  /** Period of the lifetime/idle sweep. Default 1000 ms. */
  readonly sweepMs?: number;
  /** Entries per refresh pipeline. Default 1000. */
  readonly refreshBatch?: number;
  /** Called once per connection that reached its lifetime or idle limit. */
  readonly recycle: (conn: DeviceConnection, why: 'lifetime_expired' | 'idle_timeout') => void;
}

/**
 * Keeps registry entries and connections in step:
 * - a sweep recycles connections past their (jittered) lifetime and closes idle ones;
 * - a refresh loop extends, in one pipeline per batch, only the entries that would otherwise
 *   expire before their connection is recycled. With lifetime + grace below the TTL (the
 *   default) it writes nothing: connections are recycled before their record expires, as in
 *   Zuul Push, which keeps the registry write budget at connects + disconnects
 *   (docs/decisions/0006-registry.md).
 */
export class Liveness {
  readonly #options: LivenessOptions;
  #sweepTimer: NodeJS.Timeout | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  #refreshing: Promise<void> | undefined;
  #failures = 0;
  #closed = false;

  constructor(options: LivenessOptions) {
    this.#options = options;
  }

  start(): void {
    this.#sweepTimer = setInterval(() => this.#sweep(), this.#options.sweepMs ?? 1_000);
    this.#sweepTimer.unref();
    this.#scheduleRefresh(this.#options.refreshMs);
  }

  /** Stops both loops and waits for a refresh in flight. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    clearTimeout(this.#refreshTimer);
    await this.#refreshing;
  }

  #sweep(): void {
    const now = Date.now();
    const idle = this.#options.idleTimeoutMs;
    for (const conn of this.#options.devices.values()) {
      if (conn.closeReason !== undefined || conn.closed) continue;
      try {
        if (now >= conn.recycleAt) this.#options.recycle(conn, 'lifetime_expired');
        else if (idle > 0 && now - conn.lastActivity >= idle) this.#options.recycle(conn, 'idle_timeout');
      } catch (err) {
        this.#options.metrics.loopFailures.inc({ loop: 'liveness_sweep' });
        this.#options.logger.error({ err, deviceId: conn.deviceId }, 'recycling a connection failed');
      }
    }
  }

  #scheduleRefresh(ms: number): void {
    if (this.#closed) return;
    this.#refreshTimer = setTimeout(() => {
      this.#refreshing = this.#refresh().finally(() => (this.#refreshing = undefined));
    }, ms);
    this.#refreshTimer.unref();
  }

  /** Entries whose record would expire before the connection is recycled and closed. */
  due(now = Date.now()): DeviceConnection[] {
    const { refreshMs, closeGraceMs } = this.#options;
    const out: DeviceConnection[] = [];
    for (const conn of this.#options.devices.values()) {
      if (conn.registryExpiresAt === 0 || conn.closed) continue;
      const outlivesRecord = conn.recycleAt + closeGraceMs + refreshMs >= conn.registryExpiresAt;
      const expiresSoon = conn.registryExpiresAt - now <= 2 * refreshMs;
      if (outlivesRecord && expiresSoon) out.push(conn);
    }
    return out;
  }

  async #refresh(): Promise<void> {
    const { registry, metrics, ttlSeconds, serverId } = this.#options;
    const batchSize = this.#options.refreshBatch ?? 1_000;
    try {
      const due = this.due();
      for (let i = 0; i < due.length && !this.#closed; i += batchSize) {
        const batch = due.slice(i, i + batchSize);
        const writtenAt = Date.now();
        await countedRegistryOp(metrics, 'refresh', () =>
          registry.refresh(
            batch.map((c) => ({
              deviceId: c.deviceId,
              connectionId: c.connectionId,
              userId: c.userId,
              serverId,
            })),
            ttlSeconds,
          ),
        );
        for (const c of batch) c.registryExpiresAt = writtenAt + ttlSeconds * 1000;
      }
      this.#failures = 0;
      metrics.loopRuns.inc({ loop: 'registry_refresh' });
      this.#scheduleRefresh(this.#options.refreshMs);
    } catch (err) {
      this.#failures++;
      metrics.loopFailures.inc({ loop: 'registry_refresh' });
      this.#options.logger.warn({ err, attempt: this.#failures }, 'registry refresh failed; retrying');
      this.#scheduleRefresh(Math.min(this.#options.refreshMs, backoffMs(this.#failures, 200, 10_000) + 100));
    }
  }
}
