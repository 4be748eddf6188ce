import { setTimeout as sleep } from 'node:timers/promises';
import type { DeviceRecord, RegistryCheck, RegistryRecovery, RedisClient } from '@pushline/registry';
import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import type { DeviceConnection } from './connection.ts';
import type { LocalDevices } from './local-devices.ts';
import { countedRegistryOp, type ConnectionServerMetrics } from './metrics.ts';

export interface RegistryRestorerOptions {
  readonly devices: LocalDevices;
  readonly registry: RegistryRecovery;
  /** The registry's client: every reconnect of it (`ready`) triggers a check at once. */
  readonly redis: RedisClient;
  readonly metrics: ConnectionServerMetrics;
  readonly logger: Logger;
  readonly serverId: string;
  readonly ttlSeconds: number;
  /** The registry entry of a live connection, as registering it would write it. */
  readonly recordOf: (conn: DeviceConnection) => DeviceRecord;
  /** Entries written per second at most while restoring (PUSHLINE_REGISTRY_RESTORE_RATE_PER_S). */
  readonly ratePerS: number;
  /** Period of the mark check that also catches a loss without a reconnect (a flush). Default 1000 ms. */
  readonly checkMs?: number;
  /** Entries per pipeline. Default 500 (or the rate, if lower). */
  readonly batchSize?: number;
  /** Called after a restore, e.g. to write the load report Redis also lost. */
  readonly onRestored?: () => void;
  /**
   * Called on every reconnect to Redis, restore or not: an outage longer than the load report's
   * TTL loses the report even when Redis kept its data (AOF), and routers list no server until
   * it is written again.
   */
  readonly onReconnected?: () => void;
}

/**
 * Puts this server's registry entries back when Redis loses them (a restart without persistence,
 * a failover to an empty replica, a flush) while the devices stay connected here. Without it they
 * would be unroutable (presence 0, `not_connected`) until each one reconnects, up to a connection
 * lifetime later.
 *
 * Detection: the server keeps a mark key on every shard (`mark:{<shard>}:<serverId>`; one Redis is
 * one shard), written after start and after each restore. Each reconnect of the registry client
 * checks them at once, and a periodic check catches a loss that came without a reconnect. A
 * missing mark means its shard lost the entries; on a cluster, a shard whose master changed (a
 * replica took over) may have lost the writes its old master acknowledged last, so it counts as
 * lost too. Only the entries living on the shards that lost something are written again.
 *
 * Restore: every live connection's entry is written again in pipelines, paced to `ratePerS` so a
 * fleet of servers restoring at once does not swamp the Redis that just came back. A write never
 * replaces an entry of another connection (the device moved meanwhile), and connections closed
 * since are skipped when their batch is built; the mark is written last, so a restore cut short
 * by another failure is run again.
 */
export class RegistryRestorer {
  readonly #options: RegistryRestorerOptions;
  readonly #abort = new AbortController();
  // check() settles without rejecting: its failures are logged, counted and retried inside.
  readonly #onReady = () => {
    this.#options.onReconnected?.();
    void this.check();
  };
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  /** A check was asked for while one ran: run another when it ends. */
  #again = false;
  #failures = 0;
  #closed = false;

  constructor(options: RegistryRestorerOptions) {
    this.#options = options;
  }

  /** Writes the mark (the entries are in Redis from now on) and starts watching for its loss. */
  async start(): Promise<void> {
    const { registry, serverId, ttlSeconds, metrics } = this.#options;
    await countedRegistryOp(metrics, 'mark', () => registry.markServer(serverId, ttlSeconds));
    this.#options.redis.on('ready', this.#onReady);
    this.#schedule(this.#options.checkMs ?? 1_000);
  }

  /** Stops watching, abandons a restore in progress at its next batch, and waits for it. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    clearTimeout(this.#timer);
    this.#options.redis.off('ready', this.#onReady);
    await this.#running;
  }

  /** Checks the mark now and restores if it is gone; resolves when that (and any check asked for meanwhile) is done. */
  check(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    const run = this.#checkAndRestore().finally(() => {
      this.#running = undefined;
      if (this.#again && !this.#closed) {
        this.#again = false;
        void this.check();
      }
    });
    this.#running = run;
    return run;
  }

  #schedule(ms: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      void this.check().finally(() => {
        const period = this.#options.checkMs ?? 1_000;
        this.#schedule(
          this.#failures === 0 ? period : Math.min(period, backoffMs(this.#failures, 100, 5_000)),
        );
      });
    }, ms);
    this.#timer.unref();
  }

  async #checkAndRestore(): Promise<void> {
    const { registry, serverId, ttlSeconds, metrics, logger } = this.#options;
    try {
      const check = await countedRegistryOp(metrics, 'check_mark', () =>
        registry.checkServer(serverId, ttlSeconds),
      );
      metrics.loopRuns.inc({ loop: 'registry_check' });
      if (check.lost) await this.#restore(check);
      this.#failures = 0;
    } catch (err) {
      if (this.#closed) return;
      this.#failures++;
      metrics.loopFailures.inc({ loop: 'registry_check' });
      logger.warn({ err, attempt: this.#failures }, 'registry check or restore failed; retrying');
    }
  }

  async #restore(check: RegistryCheck): Promise<void> {
    const { registry, serverId, ttlSeconds, metrics, logger, ratePerS } = this.#options;
    const startedAt = performance.now();
    const conns = [...this.#options.devices.values()].filter((c) => check.affects(c.deviceId));
    logger.warn(
      { connections: conns.length, ratePerS, shards: check.lostShards },
      'Redis may have lost this server’s registry entries (a restart without persistence, a failover?); restoring them',
    );
    const batchSize = Math.max(1, Math.min(this.#options.batchSize ?? 500, ratePerS));
    let sent = 0;
    let restored = 0;
    for (let i = 0; i < conns.length; i += batchSize) {
      // Paced: the batch starts no sooner than the rate allows for what was sent before it.
      const due = startedAt + (sent / ratePerS) * 1000 - performance.now();
      if (due > 0) await sleep(due, undefined, { signal: this.#abort.signal });
      const batch = conns.slice(i, i + batchSize).filter((c) => !c.closed && c.registryExpiresAt > 0);
      if (batch.length === 0) continue;
      const written = await countedRegistryOp(metrics, 'restore', () =>
        registry.restore(
          batch.map((c) => this.#options.recordOf(c)),
          ttlSeconds,
        ),
      );
      // registryExpiresAt stays as it was: a rewritten entry lives longer than that, which at most
      // makes the refresh loop rewrite it once more than needed.
      sent += batch.length;
      restored += written;
      metrics.registryRestored.inc(written);
    }
    await countedRegistryOp(metrics, 'mark', () => registry.markServer(serverId, ttlSeconds, check));
    logger.warn(
      { restored, checked: sent, ms: Math.round(performance.now() - startedAt) },
      'registry entries restored',
    );
    this.#options.onRestored?.();
  }
}
