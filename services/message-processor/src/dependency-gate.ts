import { setTimeout as sleep } from 'node:timers/promises';
import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';

/**
 * What the processor cannot record an outcome without: Redis and Kafka answering, and a registry
 * that holds every connected device (not one Redis lost and the servers are still writing back).
 */
export type Dependency = 'redis' | 'kafka' | 'registry';

/** A failure of a dependency, not of the record being processed: never a reason to dead-letter it. */
export class DependencyError extends Error {
  override readonly name = 'DependencyError';
  readonly dependency: Dependency;
  constructor(dependency: Dependency, cause: unknown) {
    super(`${dependency} failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.dependency = dependency;
  }
}

export interface DependencyGateOptions {
  /** Resolves when the dependency answers; rejects (or outlasts `probeTimeoutMs`) when it does not. */
  readonly probes: Readonly<Record<Dependency, () => Promise<unknown>>>;
  /** How often Redis is probed while it is up, so a Redis that hangs without closing is noticed. Default 1000. */
  readonly watchIntervalMs?: number;
  /** A probe slower than this counts as failed. Default 1000. */
  readonly probeTimeoutMs?: number;
  readonly logger: Logger;
  /** Called on every change, for metrics. */
  readonly onChange?: (dependency: Dependency, up: boolean) => void;
  /** Called on every failed background probe. */
  readonly onProbeFailure?: (dependency: Dependency) => void;
}

/**
 * Whether the processor may start records: closed while Redis or Kafka is down, so no record is
 * delivered while its outcome cannot be recorded. A dependency goes down when a call to it fails
 * (`down`) or a probe fails (Redis is probed every second; a hung Redis answers no command but
 * closes no socket). While down it is probed with backoff until it answers, then the gate opens
 * again by itself. Records wait in `whenOpen`.
 */
export class DependencyGate {
  readonly #options: DependencyGateOptions;
  readonly #log: Logger;
  readonly #down = new Map<Dependency, { since: number; reason: string }>();
  readonly #probing = new Set<Dependency>();
  readonly #waiters = new Set<() => void>();
  readonly #stop = new AbortController();
  #watch: NodeJS.Timeout | undefined;
  #watching = false;

  constructor(options: DependencyGateOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'dependency-gate' });
  }

  start(): void {
    const every = this.#options.watchIntervalMs ?? 1000;
    this.#watch = setInterval(() => {
      if (this.#watching || this.#down.has('redis')) return;
      this.#watching = true;
      // #probe answers false rather than rejecting.
      void this.#probe('redis')
        .then((ok) => {
          if (!ok) this.down('redis', new Error(`no answer to a probe within ${this.#timeoutMs} ms`));
        })
        .finally(() => (this.#watching = false));
    }, every);
    this.#watch.unref();
  }

  close(): void {
    clearInterval(this.#watch);
    this.#stop.abort();
    this.#wakeAll();
  }

  isOpen(): boolean {
    return this.#down.size === 0;
  }

  isUp(dependency: Dependency): boolean {
    return !this.#down.has(dependency);
  }

  /** The dependencies down now, and since when (ms since epoch). */
  downSince(): Partial<Record<Dependency, number>> {
    return Object.fromEntries([...this.#down].map(([d, s]) => [d, s.since]));
  }

  /** Resolves at once while every dependency is up, else when they are; rejects when `signal` aborts. */
  whenOpen(signal: AbortSignal): Promise<void> {
    if (this.isOpen()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const wake = () => {
        if (signal.aborted) {
          this.#waiters.delete(wake);
          reject(signal.reason as Error);
        } else if (this.isOpen() || this.#stop.signal.aborted) {
          this.#waiters.delete(wake);
          signal.removeEventListener('abort', wake);
          resolve();
        }
      };
      this.#waiters.add(wake);
      signal.addEventListener('abort', wake, { once: true });
      wake();
    });
  }

  /** A call to `dependency` failed: closes the gate until a probe succeeds. */
  down(dependency: Dependency, err: unknown): void {
    if (this.#stop.signal.aborted) return;
    if (!this.#down.has(dependency)) {
      const reason = err instanceof Error ? err.message : String(err);
      this.#down.set(dependency, { since: Date.now(), reason });
      this.#log.error(
        { err, dependency },
        dependency === 'registry'
          ? 'the registry may be incomplete (Redis lost it, or was unreachable while load reports expired); no record starts until it is whole'
          : `${dependency} is unreachable; no record starts until it answers again`,
      );
      this.#options.onChange?.(dependency, false);
    }
    if (!this.#probing.has(dependency)) {
      this.#probing.add(dependency);
      this.#probeUntilUp(dependency)
        .catch(() => undefined)
        .finally(() => this.#probing.delete(dependency));
    }
  }

  /** A call to `dependency` just succeeded: opens its part of the gate at once. */
  up(dependency: Dependency): void {
    const was = this.#down.get(dependency);
    if (!was) return;
    this.#down.delete(dependency);
    this.#log.info(
      { dependency, downForMs: Date.now() - was.since },
      dependency === 'registry'
        ? 'the registry is complete again; records resume'
        : `${dependency} answers again; records resume`,
    );
    this.#options.onChange?.(dependency, true);
    this.#wakeAll();
  }

  /** Probes `dependency` now: true when it answered in time. */
  async check(dependency: Dependency): Promise<boolean> {
    const ok = await this.#probe(dependency);
    if (ok) this.up(dependency);
    else this.down(dependency, new Error(`no answer to a probe within ${this.#timeoutMs} ms`));
    return ok;
  }

  get #timeoutMs(): number {
    return this.#options.probeTimeoutMs ?? 1000;
  }

  async #probe(dependency: Dependency): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.#options.probes[dependency](),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('probe timed out')), this.#timeoutMs);
        }),
      ]);
      return true;
    } catch {
      this.#options.onProbeFailure?.(dependency);
      return false;
    } finally {
      clearTimeout(timer);
    }
  }

  async #probeUntilUp(dependency: Dependency): Promise<void> {
    for (let attempt = 1; this.#down.has(dependency) && !this.#stop.signal.aborted; attempt++) {
      await sleep(Math.max(50, backoffMs(attempt, 100, 2_000)), undefined, { signal: this.#stop.signal });
      if (!this.#down.has(dependency)) return;
      if (await this.#probe(dependency)) this.up(dependency);
    }
  }

  #wakeAll(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/** Replies of a Redis that is up but cannot serve now (loading, read-only replica, blocked script, …). */
const UNAVAILABLE_REPLY = /^(LOADING|BUSY|MASTERDOWN|MISCONF|READONLY|CLUSTERDOWN|TRYAGAIN|NOREPLICAS)\b/;
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTCONN',
  'EHOSTUNREACH',
]);

/**
 * Whether an error from ioredis says Redis could not be reached or could not serve, rather than
 * refusing this command (a WRONGTYPE on a corrupt key is the command's fault, and is not this).
 */
export function isRedisUnavailableError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  if (err.name === 'MaxRetriesPerRequestError') return true;
  if (err.name === 'ReplyError') return UNAVAILABLE_REPLY.test(err.message);
  return (
    err.message === 'Connection is closed.' ||
    err.message.startsWith("Stream isn't writeable") ||
    err.message === 'Command timed out'
  );
}
