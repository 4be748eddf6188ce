import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { closeOnce } from '@pushline/runtime';
import { Counter, Gauge, stageCounter, type Logger, type Registry } from '@pushline/telemetry';

/** What the server holds right now, read at every check. */
interface LiveLoad {
  readonly connections: number;
  /** Connections opened whose device has not authenticated yet. */
  readonly pendingHandshakes: number;
  /** Started and not draining (what /readyz answers). */
  readonly ready: boolean;
}

/** One reading of everything the weight and the state are made of. */
export interface LoadSample extends LiveLoad {
  /** p99 event-loop delay over the last sampling interval. */
  readonly eventLoopLagMs: number;
  /** The last registry probe answered in time: devices connecting here can be registered. */
  readonly registryReachable: boolean;
  /** A drain began: balancers must stop sending devices here. */
  readonly draining: boolean;
  /** The server has been ready at some point (so not being ready is no longer "starting"). */
  readonly wasReady: boolean;
}

/** The capacity a server is sized for; each dimension's use is measured against its limit. */
export interface CapacityLimits {
  /** PUSHLINE_MAX_CONNECTIONS. */
  readonly maxConnections: number;
  /** The admission bound of pending handshakes (past it, handshakes are refused at the upgrade). */
  readonly maxPendingHandshakes: number;
  /** PUSHLINE_MAX_EVENT_LOOP_LAG_MS: the p99 delay at which the weight bottoms out. */
  readonly maxEventLoopLagMs: number;
}

/** Which dimension of capacity is the most used. */
type CapacityDimension = 'connections' | 'handshakes' | 'event_loop';

export type LoadAssessment =
  | {
      readonly state: 'ready';
      /** 0–1, the highest use over the dimensions: the scale-out/scale-in signal. */
      readonly utilization: number;
      readonly limitedBy: CapacityDimension;
      /** The HAProxy weight, as a percentage of the configured weight. */
      readonly weightPercent: number;
    }
  | { readonly state: 'draining'; readonly utilization: number; readonly limitedBy: CapacityDimension }
  | {
      readonly state: 'not_ready';
      /** `starting` until the server was first ready; `not_ready` when it stopped being ready. */
      readonly reason: 'starting' | 'not_ready' | 'registry_unreachable';
      readonly utilization: number;
      readonly limitedBy: CapacityDimension;
    };

/**
 * An idle loop still reports about this much p99 delay (the histogram's resolution plus timer
 * slack), which is not load.
 */
const LAG_FLOOR_MS = 20;

const clamp01 = (x: number) => Math.min(1, Math.max(0, x));

/**
 * The use of each capacity dimension and the weight that leaves: 100% idle, falling with the most
 * used dimension. A server at its connection maximum answers 0% (it takes no new devices from the
 * balancer); lag and pending handshakes steer new devices away but never below 1%, so an
 * overloaded fleet still spreads what comes rather than refusing it all at the balancer.
 */
export function assessLoad(sample: LoadSample, limits: CapacityLimits): LoadAssessment {
  const uses: [CapacityDimension, number][] = [
    ['connections', clamp01(sample.connections / limits.maxConnections)],
    ['handshakes', clamp01(sample.pendingHandshakes / limits.maxPendingHandshakes)],
    [
      'event_loop',
      clamp01((sample.eventLoopLagMs - LAG_FLOOR_MS) / Math.max(1, limits.maxEventLoopLagMs - LAG_FLOOR_MS)),
    ],
  ];
  let [limitedBy, utilization] = uses[0] as [CapacityDimension, number];
  for (const [dimension, use] of uses) {
    if (use > utilization) [limitedBy, utilization] = [dimension, use];
  }
  utilization = Math.round(utilization * 1000) / 1000;
  if (sample.draining) return { state: 'draining', utilization, limitedBy };
  if (!sample.ready) {
    return { state: 'not_ready', reason: sample.wasReady ? 'not_ready' : 'starting', utilization, limitedBy };
  }
  if (!sample.registryReachable)
    return { state: 'not_ready', reason: 'registry_unreachable', utilization, limitedBy };
  const full = sample.connections >= limits.maxConnections;
  const weightPercent = full ? 0 : Math.max(1, Math.min(100, Math.round((1 - utilization) * 100)));
  return { state: 'ready', utilization, limitedBy, weightPercent };
}

/**
 * The agent-check line (HAProxy configuration manual, "agent-check"). Only the agent can undo what
 * the agent set, so a ready server always says `up ready` too: that lifts a `down` or `drain` an
 * earlier answer left (a server restarting under the same name).
 */
export function agentReply(assessment: LoadAssessment): string {
  switch (assessment.state) {
    case 'ready':
      return `up ready ${assessment.weightPercent}%`;
    case 'draining':
      return 'drain';
    case 'not_ready':
      // The reason must be a word of its own: HAProxy 2.6 ignores a `down#reason` written together.
      return `down #${assessment.reason}`;
  }
}

export interface LoadAgentOptions {
  /** Where the agent listens (PUSHLINE_INTERNAL_HOST). */
  readonly host: string;
  /** PUSHLINE_AGENT_PORT; undefined runs no listener (the capacity gauge is still exported). */
  readonly port: number | undefined;
  readonly load: () => LiveLoad;
  /** A round trip to the registry (e.g. PING); rejecting or taking over `probeTimeoutMs` is "unreachable". */
  readonly probeRegistry: () => Promise<unknown>;
  readonly limits: CapacityLimits;
  readonly metrics: Registry;
  readonly logger: Logger;
  /** How often the event-loop lag and the registry are sampled. Default 1000 ms. */
  readonly sampleMs?: number;
  /** Default 1000 ms. */
  readonly probeTimeoutMs?: number;
  /** Longest `drain()` waits for the balancers to read `drain`. Default 10 s. */
  readonly maxDrainWaitMs?: number;
}

/** A balancer that checks this agent, known by its address. */
interface Peer {
  lastAt: number;
  /** Time between its last two checks. */
  intervalMs: number;
  /** It has read `drain` since the drain began. */
  drained: boolean;
}

const REPLY_LABEL = { ready: 'up', draining: 'drain', not_ready: 'down' } as const;

/** Peers not seen for this long are presumed gone and not waited for. */
const PEER_TTL_MS = 30_000;

/**
 * The feedback half of load-aware balancing (Helpshift's Herald, for HAProxy): answers each agent
 * check with one line made from this server's spare capacity, and samples what a check cannot read
 * instantly (event-loop lag, registry reachability). Also exports the capacity use as
 * `pushline_capacity_utilization`, the signal to scale the fleet on (docs/scaling.md).
 */
export class LoadAgent {
  readonly close: () => Promise<void>;
  readonly #options: LoadAgentOptions;
  readonly #lag = monitorEventLoopDelay({ resolution: 10 });
  readonly #checks: Counter<'reply'>;
  readonly #weight: Gauge<never>;
  readonly #probeFailures: Counter<never>;
  readonly #peers = new Map<string, Peer>();
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;
  #timer: NodeJS.Timeout | undefined;
  #lagMs = 0;
  #registryReachable = true;
  #probing = false;
  #draining = false;
  #wasReady = false;
  #drainWaiters: (() => void)[] = [];
  #port: number | undefined;

  constructor(options: LoadAgentOptions) {
    this.#options = options;
    const registers = [options.metrics];
    const assess = () => this.assess();
    new Gauge({
      name: 'pushline_capacity_utilization',
      help: 'Share of capacity in use, 0-1: the highest of connections/PUSHLINE_MAX_CONNECTIONS, pending handshakes/admission bound and event-loop lag/PUSHLINE_MAX_EVENT_LOOP_LAG_MS. Scale out above 0.7 on average, in below 0.35 (docs/scaling.md).',
      registers,
      collect() {
        this.set(assess().utilization);
      },
    });
    this.#weight = new Gauge({
      name: 'pushline_lb_weight_percent',
      help: 'Weight in the last agent-check answer (0 while draining or not ready).',
      registers,
    });
    // Every reply from boot at 0, so the first `drain` or `down` moves rate().
    this.#checks = stageCounter({
      name: 'pushline_lb_agent_checks_total',
      help: 'Load-balancer agent checks answered, by reply (up, drain, down).',
      labels: { reply: Object.values(REPLY_LABEL) },
      registry: options.metrics,
    });
    this.#probeFailures = new Counter({
      name: 'pushline_lb_probe_failures_total',
      help: 'Registry probes of the load agent that failed or took too long (the server reports itself down meanwhile).',
      registers,
    });
    this.close = closeOnce(() => this.#close());
  }

  /** The agent's port once listening; undefined without a listener. */
  get port(): number | undefined {
    return this.#port;
  }

  get draining(): boolean {
    return this.#draining;
  }

  sample(): LoadSample {
    const live = this.#options.load();
    if (live.ready) this.#wasReady = true;
    return {
      ...live,
      wasReady: this.#wasReady,
      eventLoopLagMs: this.#lagMs,
      registryReachable: this.#registryReachable,
      draining: this.#draining,
    };
  }

  assess(): LoadAssessment {
    return assessLoad(this.sample(), this.#options.limits);
  }

  /** Starts sampling, and listens when a port is configured: until the server is ready it answers `down #starting`. */
  async start(): Promise<void> {
    this.#lag.enable();
    this.#schedule();
    if (this.#options.port === undefined) return;
    const server = createServer((socket) => this.#answer(socket));
    this.#server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.#options.host, port: this.#options.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.#options.logger.warn({ err }, 'load agent listener error'));
    this.#port = (server.address() as AddressInfo).port;
    this.#options.logger.info({ agentPort: this.#port }, 'load-balancer agent listening');
  }

  /**
   * Begins the drain: every check from now on answers `drain`. Resolves once each balancer that
   * checks this agent has read it (each peer seen lately, at its next check), so devices told to
   * reconnect after this are no longer sent back here; at once when no balancer checks us, and
   * after at most `maxDrainWaitMs` (or two check intervals) when one stops checking.
   */
  drain(): Promise<void> {
    if (!this.#draining) {
      this.#draining = true;
      for (const peer of this.#peers.values()) peer.drained = false;
      this.#options.logger.info({ peers: this.#peers.size }, 'load agent draining');
    }
    const now = Date.now();
    const waitingFor = [...this.#peers.values()].filter((p) => !p.drained && now - p.lastAt < PEER_TTL_MS);
    if (waitingFor.length === 0) return Promise.resolve();
    const boundMs = Math.min(
      this.#options.maxDrainWaitMs ?? 10_000,
      2 * Math.max(...waitingFor.map((p) => p.intervalMs)) + 250,
    );
    return new Promise((resolve) => {
      const timer = setTimeout(done, boundMs);
      const waiters = this.#drainWaiters;
      function done() {
        clearTimeout(timer);
        const at = waiters.indexOf(done);
        if (at >= 0) waiters.splice(at, 1);
        resolve();
      }
      waiters.push(done);
    });
  }

  #answer(socket: Socket): void {
    const address = socket.remoteAddress ?? 'unknown';
    this.#sockets.add(socket);
    // Whatever the balancer sends (agent-send) is not needed; a peer that vanishes is no error.
    socket.on('error', () => socket.destroy());
    socket.on('data', () => {});
    socket.setTimeout(5_000, () => socket.destroy());
    const assessment = this.assess();
    const reply = agentReply(assessment);
    socket.end(`${reply}\n`);
    this.#weight.set(assessment.state === 'ready' ? assessment.weightPercent : 0);
    this.#checks.inc({ reply: REPLY_LABEL[assessment.state] });
    this.#notePeer(address);
    // The balancer closes once it has read and applied the line: only then has it seen `drain`.
    socket.on('close', () => {
      this.#sockets.delete(socket);
      if (assessment.state === 'draining') this.#drained(address);
    });
  }

  #notePeer(address: string): void {
    const now = Date.now();
    const peer = this.#peers.get(address);
    if (peer) {
      peer.intervalMs = now - peer.lastAt;
      peer.lastAt = now;
    } else {
      this.#peers.set(address, { lastAt: now, intervalMs: 2_000, drained: false });
    }
  }

  #drained(address: string): void {
    const peer = this.#peers.get(address);
    if (peer) peer.drained = true;
    const now = Date.now();
    const pending = [...this.#peers.values()].some((p) => !p.drained && now - p.lastAt < PEER_TTL_MS);
    if (!pending) for (const done of [...this.#drainWaiters]) done();
  }

  #schedule(): void {
    const sampleMs = this.#options.sampleMs ?? 1_000;
    this.#timer = setTimeout(() => {
      this.#lagMs = this.#lag.count > 0 ? this.#lag.percentile(99) / 1e6 : 0;
      this.#lag.reset();
      this.#probe();
      this.#schedule();
    }, sampleMs);
    this.#timer.unref();
  }

  /**
   * One registry probe at a time, at the sampling pace whatever happens (it is how recovery is
   * noticed, and one PING a second is nothing): a probe that outlives its bound marks the registry
   * unreachable at once, and no other starts until it settles, so a hung client gets no pile-up.
   */
  #probe(): void {
    if (this.#probing) return;
    this.#probing = true;
    const timeoutMs = this.#options.probeTimeoutMs ?? 1_000;
    const timer = setTimeout(
      () => this.#unreachable(new Error(`no answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    this.#options
      .probeRegistry()
      .then(
        () => {
          if (!this.#registryReachable) this.#options.logger.info('registry reachable again; taking devices');
          this.#registryReachable = true;
        },
        (err: unknown) => this.#unreachable(err),
      )
      .finally(() => {
        clearTimeout(timer);
        this.#probing = false;
      });
  }

  #unreachable(err: unknown): void {
    this.#probeFailures.inc();
    // Logged when it changes, not on every probe of a long outage (the counter has those).
    if (this.#registryReachable) {
      this.#options.logger.warn({ err }, 'registry probe failed; the agent reports this server down');
    }
    this.#registryReachable = false;
  }

  async #close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#lag.disable();
    for (const done of [...this.#drainWaiters]) done();
    const server = this.#server;
    if (!server) return;
    for (const socket of this.#sockets) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
