import { GeneratorProcess } from './ipc.ts';
import {
  ConnectResult,
  D2dResult,
  Empty,
  FleetStats,
  SubscribeResult,
  type ConnectArgs,
  type D2dArgs,
} from './fleet-protocol.ts';
import { increment } from './pool.ts';
import type { DeviceCredential } from '../tokens.ts';
import { closeOnce, runCleanup } from '@pushline/runtime';

/**
 * The machine allows 20k open files per process. A generator holds one socket per device (plus a
 * few pipes), so 9k keeps a wide margin and lets two generators cover a full 18k server.
 */
const MAX_DEVICES_PER_GENERATOR = 9000;

const FLEET_SCRIPT = new URL('./device-fleet.ts', import.meta.url);

export interface FleetConnectOptions {
  readonly urls: readonly string[];
  readonly pin?: number;
  /** Handshakes in flight per generator. Default 100. */
  readonly concurrency?: number;
  /** Default 15 000 ms per handshake. */
  readonly timeoutMs?: number;
  /** See ConnectArgs.reconnectDelayMs. Default 0 (no reconnect). */
  readonly reconnectDelayMs?: number;
  /** See ConnectArgs.reconnectUrls. */
  readonly reconnectUrls?: readonly string[];
  /** See ConnectArgs.silent. */
  readonly silent?: boolean;
}

export interface AggregateStats {
  readonly connected: number;
  readonly received: number;
  readonly latencies: number[];
  readonly reconnects: number;
  readonly reconnectErrors: number;
  readonly reconnectErrorKinds: Record<string, number>;
  readonly lastReceivedAt: number;
}

/** A set of devices spread over as many generator processes as their count needs. */
export class DeviceFleet {
  readonly #generators: GeneratorProcess[];
  readonly #shares: DeviceCredential[][];

  private constructor(generators: GeneratorProcess[], shares: DeviceCredential[][]) {
    this.#generators = generators;
    this.#shares = shares;
  }

  static create(label: string, devices: readonly DeviceCredential[]): DeviceFleet {
    const count = Math.max(1, Math.ceil(devices.length / MAX_DEVICES_PER_GENERATOR));
    // Pairs (2k, 2k+1) stay in one generator, so d2d senders and targets are both at hand.
    const shares: DeviceCredential[][] = Array.from({ length: count }, () => []);
    const pairs = Math.ceil(devices.length / 2);
    for (let p = 0; p < pairs; p++) {
      const share = shares[p % count] as DeviceCredential[];
      for (const d of devices.slice(2 * p, 2 * p + 2)) share.push(d);
    }
    const generators = shares.map((_, i) => new GeneratorProcess(`${label}-fleet${i}`, FLEET_SCRIPT));
    return new DeviceFleet(generators, shares);
  }

  get size(): number {
    return this.#shares.reduce((n, s) => n + s.length, 0);
  }

  get pids(): number[] {
    return this.#generators.flatMap((g) => (g.pid === undefined ? [] : [g.pid]));
  }

  async connect(opts: FleetConnectOptions): Promise<ConnectResult> {
    const started = performance.now();
    const timeoutMs = opts.timeoutMs ?? 15_000;
    const results = await Promise.all(
      this.#generators.map((g, i) => {
        const args: ConnectArgs = {
          devices: this.#shares[i] ?? [],
          urls: [...opts.urls],
          concurrency: opts.concurrency ?? 100,
          timeoutMs,
          reconnectDelayMs: opts.reconnectDelayMs ?? 0,
          ...(opts.pin === undefined ? {} : { pin: opts.pin }),
          ...(opts.reconnectUrls === undefined ? {} : { reconnectUrls: [...opts.reconnectUrls] }),
          ...(opts.silent === undefined ? {} : { silent: opts.silent }),
        };
        // Bounded: every handshake is bounded by timeoutMs, so the batch is bounded by its waves.
        const bound = timeoutMs * Math.ceil(args.devices.length / args.concurrency + 1) + 10_000;
        return g.request('connect', args, ConnectResult, bound);
      }),
    );
    const errors: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) increment(errors, k, v);
    return {
      connected: results.reduce((n, r) => n + r.connected, 0),
      failed: results.reduce((n, r) => n + r.failed, 0),
      ms: performance.now() - started,
      errors,
    };
  }

  async subscribe(topic: string): Promise<SubscribeResult> {
    const started = performance.now();
    const results = await Promise.all(
      this.#generators.map((g) =>
        g.request('subscribe', { topic, concurrency: 200 }, SubscribeResult, 120_000),
      ),
    );
    return {
      ok: results.reduce((n, r) => n + r.ok, 0),
      failed: results.reduce((n, r) => n + r.failed, 0),
      ms: performance.now() - started,
    };
  }

  async reset(): Promise<void> {
    await Promise.all(this.#generators.map((g) => g.request('reset', {}, Empty, 10_000)));
  }

  async stats(): Promise<AggregateStats> {
    const all = await Promise.all(this.#generators.map((g) => g.request('stats', {}, FleetStats, 30_000)));
    return {
      connected: all.reduce((n, s) => n + s.connected, 0),
      received: all.reduce((n, s) => n + s.received, 0),
      latencies: all.flatMap((s) => s.latencies),
      reconnects: all.reduce((n, s) => n + s.reconnects, 0),
      reconnectErrors: all.reduce((n, s) => n + s.reconnectErrors, 0),
      reconnectErrorKinds: all.reduce<Record<string, number>>((acc, s) => {
        for (const [k, v] of Object.entries(s.reconnectErrorKinds)) increment(acc, k, v);
        return acc;
      }, {}),
      lastReceivedAt: Math.max(0, ...all.map((s) => s.lastReceivedAt)),
    };
  }

  /**
   * Device-to-device traffic: each generator sends between its own pairs at its share of the
   * total rate, so the offered load is `ratePerS` overall.
   */
  async d2d(opts: Omit<D2dArgs, 'pairs'> & { senders: number }): Promise<D2dResult> {
    const perGen = opts.ratePerS / this.#generators.length;
    const sendersPerGen = Math.max(1, Math.floor(opts.senders / this.#generators.length));
    const results = await Promise.all(
      this.#generators.map((g, i) => {
        const share = this.#shares[i] ?? [];
        const pairs: [string, string][] = [];
        for (let k = 0; k + 1 < share.length && pairs.length < sendersPerGen; k += 2) {
          const a = share[k] as DeviceCredential;
          const b = share[k + 1] as DeviceCredential;
          pairs.push([a.id, b.id]);
        }
        const args: D2dArgs = {
          pairs,
          ratePerS: perGen,
          durationMs: opts.durationMs,
          timeoutMs: opts.timeoutMs,
        };
        return g.request('d2d', args, D2dResult, opts.durationMs + opts.timeoutMs + 30_000);
      }),
    );
    const outcomes: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.outcomes)) increment(outcomes, k, v);
    return {
      sent: results.reduce((n, r) => n + r.sent, 0),
      ms: Math.max(...results.map((r) => r.ms)),
      outcomes,
      latencies: results.flatMap((r) => r.latencies),
      slowBySecond: (results[0]?.slowBySecond ?? []).map((_, i) =>
        results.reduce((n, r) => n + (r.slowBySecond[i] ?? 0), 0),
      ),
    };
  }

  readonly close = closeOnce(() =>
    runCleanup(this.#generators.map((g) => ({ name: g.name, run: () => g.close() }))),
  );
}
