import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { SignJWT } from 'jose';
import type { Admin } from '@pushline/kafka';
import type { DeviceRegistry, ServerLoad } from '@pushline/registry';
import { backoffMs, closeOnce } from '@pushline/runtime';
import { SpanKind, injectTraceHeaders, withSpan, type Logger, type Tracer } from '@pushline/telemetry';
import { CanaryDevice, type CanaryPayload } from './canary-device.ts';
import type { CanaryLoop, CanaryMetrics, ProbePath, ProbeResult } from './metrics.ts';

export interface CanaryOptions {
  /** Where the connection servers' load reports are read (`liveServers`). */
  readonly registry: Pick<DeviceRegistry, 'liveServers'>;
  /** Reads the processors' committed offsets and the high watermarks from the broker. */
  readonly admin: Pick<Admin, 'groupLagByPartition'>;
  readonly apiUrl: string;
  /** Needs the push and publish scopes. */
  readonly apiKey: string;
  /** HS256 secret, issuer and audience the connection servers verify device tokens with. */
  readonly jwt: { readonly secret: string; readonly issuer?: string; readonly audience?: string };
  /** Consumer group and topic whose lag is read: the processors' push-requests. */
  readonly lag: { readonly group: string; readonly topic: string };
  readonly devicePrefix: string;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly forgetAfterMs: number;
  readonly metrics: CanaryMetrics;
  readonly tracer: Tracer;
  readonly logger: Logger;
}

/** Longest close() waits for a lag read and the probes in flight. */
const CLOSE_WAIT_MS = 2_000;

/** active: probed. lost: its load report vanished without a drain (a crash), still probed until forgotten. */
type TargetState = 'active' | 'lost';

interface Target {
  readonly device: CanaryDevice;
  state: TargetState;
  lostAt: number;
}

export interface CanaryServerStatus {
  readonly serverId: string;
  readonly state: TargetState;
  readonly connected: boolean;
}

/**
 * Pushy's "metrics service that occasionally delivers a message": keeps one canary device
 * connected to every connection server (found through their load reports), and every interval
 * sends each of them a direct push and an async publish through the API, recording per path
 * and per server whether the message arrived and how long it took. Each round also reads the
 * processors' consumer lag from the broker, which stays right when the processors hang or die.
 *
 * A server that drains (graceful shutdown, scale-down) is dropped at once. A server whose report
 * expires without draining crashed: it stays probed, and failing, for `forgetAfterMs`, so the
 * crash shows in the canary's numbers and alerts instead of disappearing with the report.
 */
export class Canary {
  readonly #options: CanaryOptions;
  readonly #log: Logger;
  readonly #targets = new Map<string, Target>();
  readonly #inFlight = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  readonly #secret: Uint8Array;
  #timer: NodeJS.Timeout | undefined;
  #round: Promise<void> | undefined;
  #lagRead: Promise<void> | undefined;
  #discoveries = 0;
  #failures = 0;
  #closed = false;
  readonly close: () => Promise<void>;

  constructor(options: CanaryOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'canary' });
    this.#secret = new TextEncoder().encode(options.jwt.secret);
    this.close = closeOnce(() => this.#close());
  }

  /** True once the connection servers were listed at least once. */
  get ready(): boolean {
    return this.#discoveries > 0;
  }

  get servers(): CanaryServerStatus[] {
    return [...this.#targets].map(([serverId, t]) => ({
      serverId,
      state: t.state,
      connected: t.device.connected,
    }));
  }

  deviceIdOf(serverId: string): string {
    return `${this.#options.devicePrefix}${serverId}`;
  }

  /** Runs the first round now (its probes go on in the background), then one every interval. */
  async start(): Promise<void> {
    await this.#runRound();
  }

  async #runRound(): Promise<void> {
    if (this.#closed) return;
    let next = this.#options.intervalMs;
    this.#round = this.#roundOnce().then(
      () => {
        this.#failures = 0;
      },
      (err: unknown) => {
        this.#failures++;
        next = Math.min(this.#options.intervalMs, 100 + backoffMs(this.#failures, 200, 5_000));
        this.#log.warn({ err, attempt: this.#failures }, 'canary round failed; retrying');
      },
    );
    await this.#round;
    this.#round = undefined;
    if (this.#closed) return;
    this.#timer = setTimeout(() => void this.#runRound(), next);
  }

  async #roundOnce(): Promise<void> {
    await this.#counted('discovery', () => this.#discover());
    // Closed meanwhile: start nothing that close() would no longer wait for.
    if (this.#closed) return;
    for (const [serverId, target] of this.#targets) {
      for (const path of ['direct', 'async'] as const) this.#track(this.#probe(serverId, target, path));
    }
    this.#options.metrics.loopRuns.inc({ loop: 'probe' });
    // One lag read at a time: a broker that answers slowly must not pile reads up.
    this.#lagRead ??= this.#counted('consumer_lag', () => this.#readLag())
      .catch((err: unknown) => {
        this.#options.metrics.clearLag();
        this.#log.warn({ err }, 'reading the consumer lag failed');
      })
      .finally(() => {
        this.#lagRead = undefined;
      });
  }

  async #counted(loop: CanaryLoop, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
      this.#options.metrics.loopRuns.inc({ loop });
    } catch (err) {
      this.#options.metrics.loopFailures.inc({ loop });
      throw err;
    }
  }

  async #discover(): Promise<void> {
    const live = await this.#options.registry.liveServers();
    if (this.#closed) return;
    const now = Date.now();
    const listed = new Set<string>();
    for (const load of live) {
      listed.add(load.serverId);
      const target = this.#targets.get(load.serverId);
      if (load.draining) {
        // Going away on purpose: its devices are being moved, so is ours; nothing to report.
        if (target) this.#forget(load.serverId, 'drains');
        continue;
      }
      // The server's own port, not the public URL: behind a balancer that would reach any server.
      if (target && target.device.deviceUrl !== load.directUrl) this.#forget(load.serverId, 'moved');
      const current = this.#targets.get(load.serverId);
      if (!current) this.#add(load);
      else if (current.state === 'lost') {
        current.state = 'active';
        this.#log.info({ serverId: load.serverId }, 'connection server reports again');
      }
    }
    for (const [serverId, target] of this.#targets) {
      if (listed.has(serverId)) continue;
      if (target.state === 'active') {
        target.state = 'lost';
        target.lostAt = now;
        this.#log.warn(
          { serverId },
          'connection server stopped reporting without draining; still probing it',
        );
      } else if (now - target.lostAt >= this.#options.forgetAfterMs) {
        this.#forget(serverId, 'lost for too long');
      }
    }
    this.#discoveries++;
  }

  #add(load: ServerLoad): void {
    const { serverId } = load;
    const deviceId = this.deviceIdOf(serverId);
    this.#options.metrics.addServer(serverId);
    const device = new CanaryDevice({
      serverId,
      deviceUrl: load.directUrl,
      deviceId,
      token: () => this.#token(deviceId),
      logger: this.#log,
      onConnection: (up) => {
        if (this.#targets.get(serverId)?.device === device) this.#options.metrics.connected(serverId, up);
      },
    });
    this.#targets.set(serverId, { device, state: 'active', lostAt: 0 });
    device.start();
    this.#log.info({ serverId, deviceUrl: load.directUrl, deviceId }, 'canary device added');
  }

  #forget(serverId: string, why: string): void {
    const target = this.#targets.get(serverId);
    if (!target) return;
    this.#targets.delete(serverId);
    target.device.close();
    this.#options.metrics.removeServer(serverId);
    this.#log.info({ serverId, why }, 'canary device removed');
  }

  #token(deviceId: string): Promise<string> {
    const { issuer, audience } = this.#options.jwt;
    let jwt = new SignJWT({ uid: `${this.#options.devicePrefix}user` })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(deviceId)
      .setIssuedAt()
      .setExpirationTime('1h');
    if (issuer !== undefined) jwt = jwt.setIssuer(issuer);
    if (audience !== undefined) jwt = jwt.setAudience(audience);
    return jwt.sign(this.#secret);
  }

  /** One probe: send through the API, wait for the device; never throws, records one result. */
  async #probe(serverId: string, target: Target, path: ProbePath): Promise<void> {
    const deviceId = this.deviceIdOf(serverId);
    const probe = `${path}-${randomUUID()}`;
    const { result, latencyMs } = await withSpan(
      this.#options.tracer,
      `canary ${path}`,
      { kind: SpanKind.CLIENT, attributes: { 'pushline.server.id': serverId, 'pushline.canary.path': path } },
      async (span) => {
        const outcome = await this.#send(target.device, deviceId, probe, path);
        span.setAttribute('pushline.canary.result', outcome.result);
        return outcome;
      },
    );
    // A probe cut short by close() says nothing about the platform.
    if (this.#closed) return;
    this.#options.metrics.probe(path, serverId, result, latencyMs);
    if (result !== 'ok') this.#log.warn({ serverId, path, result }, 'canary probe failed');
  }

  async #send(
    device: CanaryDevice,
    deviceId: string,
    probe: string,
    path: ProbePath,
  ): Promise<{ result: ProbeResult; latencyMs?: number }> {
    const payload: CanaryPayload = { canary: probe };
    const received = device.expect(probe, this.#options.timeoutMs);
    const started = performance.now();
    const [url, body, expected] =
      path === 'direct'
        ? [`/v1/devices/${encodeURIComponent(deviceId)}/messages`, { payload }, 200]
        : ['/v1/publish', { target: { type: 'device', id: deviceId }, payload }, 202];
    let status: number;
    try {
      const res = await fetch(`${this.#options.apiUrl}${url}`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${this.#options.apiKey}`,
          'content-type': 'application/json',
          ...injectTraceHeaders(),
        },
        body: JSON.stringify(body),
        signal: AbortSignal.any([this.#abort.signal, AbortSignal.timeout(this.#options.timeoutMs)]),
      });
      status = res.status;
      await res.arrayBuffer();
    } catch (err) {
      const timedOut = err instanceof Error && err.name === 'TimeoutError';
      return { result: timedOut ? 'timeout' : 'error' };
    }
    if (status !== expected) {
      if (status === 404) return { result: 'not_connected' };
      if (status === 504) return { result: 'timeout' };
      return { result: 'error' };
    }
    const at = await received;
    return at === undefined ? { result: 'timeout' } : { result: 'ok', latencyMs: at - started };
  }

  async #readLag(): Promise<void> {
    const { group, topic } = this.#options.lag;
    const partitions = await this.#options.admin.groupLagByPartition(group, topic);
    if (!this.#closed) this.#options.metrics.lag(group, topic, partitions);
  }

  #track(work: Promise<void>): void {
    const settled: Promise<void> = work
      .catch((err: unknown) => this.#log.error({ err }, 'canary probe failed unexpectedly'))
      .finally(() => {
        this.#inFlight.delete(settled);
      });
    this.#inFlight.add(settled);
  }

  async #close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#abort.abort();
    // A round in progress ends after its discovery and starts nothing more.
    await boundedWait(this.#round);
    for (const serverId of [...this.#targets.keys()]) this.#forget(serverId, 'canary closing');
    // Every probe ends now: fetches are aborted and the devices' waits resolved. A lag read (or a
    // discovery) may wait on a broker or Redis that is down; closing the clients, the caller's
    // next steps, ends those.
    await boundedWait(Promise.allSettled([this.#lagRead, ...this.#inFlight]));
  }
}

/** Waits for `work` (never rejects) at most CLOSE_WAIT_MS. */
function boundedWait(work: Promise<unknown> | undefined): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    Promise.resolve(work).catch(() => undefined),
    new Promise((resolve) => {
      timer = setTimeout(resolve, CLOSE_WAIT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}
