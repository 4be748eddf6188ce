import {
  Counter,
  Gauge,
  Histogram,
  LATENCY_BUCKETS_S,
  stageCounter,
  type Registry,
} from '@pushline/telemetry';

/** The two ways a backend reaches a device: direct push (HTTP, synchronous) and async publish (Kafka). */
const PROBE_PATHS = ['direct', 'async'] as const;
export type ProbePath = (typeof PROBE_PATHS)[number];

/**
 * How a probe ended. ok: the canary device got the message (and a direct push answered 200).
 * not_connected: the API answered 404. timeout: nothing reached the device in time (or the API
 * answered 504). error: the API refused or could not be reached.
 */
const PROBE_RESULTS = ['ok', 'not_connected', 'timeout', 'error'] as const;
export type ProbeResult = (typeof PROBE_RESULTS)[number];

/** Loops of the canary, counted in the same families as the connection server's loops. */
const CANARY_LOOPS = ['discovery', 'probe', 'consumer_lag'] as const;
export type CanaryLoop = (typeof CANARY_LOOPS)[number];

/**
 * The canary's metrics. Per-server series are created at 0 when a server is discovered and
 * removed when it is forgotten, so a scaled-down server leaves no flat line behind.
 */
export class CanaryMetrics {
  readonly #probes: Counter<'path' | 'server' | 'result'>;
  readonly #latency: Histogram<'path' | 'server'>;
  readonly #connected: Gauge<'server'>;
  readonly #lag: Gauge<'group' | 'topic' | 'partition'>;
  readonly loopRuns: Counter<'loop'>;
  readonly loopFailures: Counter<'loop'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.#probes = new Counter({
      name: 'pushline_canary_probes_total',
      help: 'Canary probes by path (direct, async), connection server and result (ok, not_connected, timeout, error).',
      labelNames: ['path', 'server', 'result'],
      registers,
    });
    this.#latency = new Histogram({
      name: 'pushline_canary_latency_seconds',
      help: 'Canary probe sent → message received by the canary device, of successful probes, by path and connection server.',
      labelNames: ['path', 'server'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    });
    this.#connected = new Gauge({
      name: 'pushline_canary_device_connected',
      help: '1 while the canary device of a connection server is connected to it, else 0.',
      labelNames: ['server'],
      registers,
    });
    this.#lag = new Gauge({
      name: 'pushline_consumer_group_lag',
      help: 'Records of a topic partition not yet committed by a consumer group (high watermark - committed offset), read from the broker by the canary.',
      labelNames: ['group', 'topic', 'partition'],
      registers,
    });
    this.loopRuns = stageCounter({
      name: 'pushline_loop_runs_total',
      help: 'Completed iterations of background loops, to see that they run at all.',
      labels: { loop: CANARY_LOOPS },
      registry,
    });
    this.loopFailures = stageCounter({
      name: 'pushline_loop_failures_total',
      help: 'Failed iterations of background loops (discovery, probe, consumer_lag).',
      labels: { loop: CANARY_LOOPS },
      registry,
    });
  }

  /** Every series of a newly discovered server, at 0. */
  addServer(server: string): void {
    for (const path of PROBE_PATHS) {
      for (const result of PROBE_RESULTS) this.#probes.inc({ path, server, result }, 0);
      this.#latency.zero({ path, server });
    }
    this.#connected.set({ server }, 0);
  }

  removeServer(server: string): void {
    for (const path of PROBE_PATHS) {
      for (const result of PROBE_RESULTS) this.#probes.remove({ path, server, result });
      this.#latency.remove({ path, server });
    }
    this.#connected.remove({ server });
  }

  probe(path: ProbePath, server: string, result: ProbeResult, latencyMs?: number): void {
    this.#probes.inc({ path, server, result });
    if (result === 'ok' && latencyMs !== undefined) this.#latency.observe({ path, server }, latencyMs / 1000);
  }

  connected(server: string, up: boolean): void {
    this.#connected.set({ server }, up ? 1 : 0);
  }

  /** Replaces the lag series of a group's topic (partitions can only grow, but a failed read clears them). */
  lag(group: string, topic: string, partitions: readonly { partition: number; lag: number }[]): void {
    this.#lag.reset();
    for (const p of partitions) this.#lag.set({ group, topic, partition: String(p.partition) }, p.lag);
  }

  clearLag(): void {
    this.#lag.reset();
  }
}
