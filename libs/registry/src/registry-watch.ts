import { Counter, Gauge, type Logger, type Registry } from '@pushline/telemetry';
import type { RedisClient } from './redis-client.ts';
import type { DeviceRegistry, RegistryRecovery } from './types.ts';

/**
 * Thrown where a router would answer from the registry's silence (a device not registered, a user
 * with fewer devices, a topic with fewer servers) while the registry is being restored after
 * Redis lost it: the device may be connected and not written back yet, so the answer is "retry
 * later", never `not_connected`.
 */
export class RegistryIncompleteError extends Error {
  override readonly name = 'RegistryIncompleteError';
  /** Connection servers not yet seen to have written their entries back. */
  readonly restoringServers: readonly string[];
  /** When the loss (or the blind spell) was noticed, or (no server listed) when the restore ended: the watch’s clock. */
  readonly since: number;
  constructor(restoringServers: readonly string[], since: number) {
    super(
      restoringServers.length > 0
        ? `the registry is being restored after Redis lost it or was unreachable; ${restoringServers.length} connection server(s) have not written their entries or load reports back yet`
        : 'the registry was restored after Redis lost it while this read ran; the read may have seen a part of it',
    );
    this.restoringServers = restoringServers;
    this.since = since;
  }
}

/** What a router asks before it trusts a negative answer of the registry. */
export interface RegistryCompleteness {
  /** The watch's clock: read it before the registry read that `confirm` is to vouch for. */
  now(): number;
  /**
   * Resolves when the registry held every live connection for the whole time since `readAt`
   * (taken with `now()` before the read), as a check that began after this call finds; rejects
   * with `RegistryIncompleteError` while it is being restored or when a restore ended after
   * `readAt` (the read may have seen a part of it), or with Redis's error.
   */
  confirm(readAt: number): Promise<void>;
}

export interface RegistryWatchOptions {
  readonly registry: Pick<DeviceRegistry, 'liveServers'> &
    Pick<RegistryRecovery, 'markServer' | 'checkServer' | 'serversMarked'>;
  /** The registry's client: a reconnect (`ready`) triggers a check at once. */
  readonly redis: RedisClient;
  /** Unique per process; names the watch's own mark (`watch:<id>`). */
  readonly watcherId: string;
  readonly logger: Logger;
  /** Period of the background check, which also learns the live servers. Default 1000 ms. */
  readonly checkMs?: number;
  /**
   * How long a server known before the loss may stay unseen before it counts as gone rather than
   * restoring: the load report's TTL (3 × PUSHLINE_LOAD_REPORT_MS). Default 15 000 ms.
   */
  readonly serverGoneAfterMs?: number;
  /** The clock (ms since epoch). Default `Date.now`. */
  readonly now?: () => number;
  /** Lifetime of the watch's own mark, extended by every check. Default 60 s. */
  readonly markTtlSeconds?: number;
  /** Called when the registry turns incomplete (false) and complete again (true). */
  readonly onChange?: (complete: boolean) => void;
  /**
   * When given, records `pushline_registry_complete` (1, 0 while Redis's lost entries are
   * written back) and `pushline_registry_watch_failures_total` (failed background checks).
   */
  readonly metrics?: Registry;
}

interface WatchMetrics {
  readonly complete: Gauge;
  readonly failures: Counter;
}

function watchMetrics(registry: Registry | undefined): WatchMetrics | undefined {
  if (!registry) return undefined;
  const existing = <T>(name: string): T | undefined => registry.getSingleMetric(name) as T | undefined;
  return {
    complete:
      existing<Gauge>('pushline_registry_complete') ??
      new Gauge({
        name: 'pushline_registry_complete',
        help: 'Whether this instance trusts the registry’s silence (1), or waits while connection servers write back the entries Redis lost, or the load reports that expired while it was unreachable (0).',
        registers: [registry],
      }),
    failures:
      existing<Counter>('pushline_registry_watch_failures_total') ??
      new Counter({
        name: 'pushline_registry_watch_failures_total',
        help: 'Background checks of whether Redis lost the registry that failed (Redis did not answer); retried every second.',
        registers: [registry],
      }),
  };
}

interface Restoring {
  readonly since: number;
  /**
   * Servers live before the loss (or missing after a blind spell) that have not yet marked their
   * entries as back, with when the watch began to wait for each (its report TTL counts from there).
   */
  readonly waitingFor: Map<string, number>;
}

/**
 * Tells a router whether the registry's silence can be trusted. Redis can lose the registry (a
 * restart without persistence, a failover to an empty replica, a flush) while the devices stay
 * connected; each connection server then writes its live connections back (`RegistryRestorer`)
 * and marks its entries as there again. Until every server did, "not registered" may be false.
 *
 * The watch keeps a mark of its own on every shard. A check that finds it gone (or a shard's
 * master changed) means Redis lost data: the registry is incomplete until each server that was
 * live before the loss, or is listed since without its marks, has its marks back (its restore
 * ended) and its load report written, or has stayed unseen for a load report's TTL (it died
 * meanwhile). `confirm()` runs a check that starts after it was called, shared by every caller
 * waiting at that moment, and refuses a read that began before the last restore ended: a
 * router's negative answer stands only on a registry that was whole from before its lookup until
 * after it.
 *
 * Redis can also keep its data (AOF) and still lose the load reports: they expire while Redis is
 * away, and each server writes its report again only once it has reconnected. So after a blind
 * spell (a check failed, or the client connected again) the first check that answers counts every
 * server listed at the last check before it and missing now as restoring, like a loss, until it
 * is listed (and marked) again or has stayed unlisted for a report's TTL. A report that expires
 * while the watch is watching is a server going away, and nobody waits for it.
 */
export class RegistryWatch implements RegistryCompleteness {
  readonly #options: RegistryWatchOptions;
  readonly #log: Logger;
  readonly #markId: string;
  readonly #markTtlSeconds: number;
  readonly #goneAfterMs: number;
  /** serverId → when its load report was last seen (ms since epoch), by checks that answered. */
  readonly #known = new Map<string, number>();
  /** The servers listed by the last check that answered. */
  #listed = new Set<string>();
  /**
   * The watch could not see Redis since the last check that answered (a check failed, or the
   * client connected again): reports may have expired unseen meanwhile.
   */
  #blind = false;
  #restoring: Restoring | undefined;
  /** When the registry was last found whole after a loss (the watch's clock); reads before it are refused. */
  #wholeSince = Number.NEGATIVE_INFINITY;
  #running: Promise<void> | undefined;
  /** The check that starts when the running one ends, shared by everyone who asked meanwhile. */
  #next: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #metrics: WatchMetrics | undefined;
  readonly #onReady = () => {
    // A 'ready' after the first connection: Redis was away for a while, however short.
    this.#blind = true;
    this.check().catch(() => undefined);
  };

  constructor(options: RegistryWatchOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: 'registry-watch' });
    this.#markId = `watch:${options.watcherId}`;
    this.#markTtlSeconds = options.markTtlSeconds ?? 60;
    this.#goneAfterMs = options.serverGoneAfterMs ?? 15_000;
    this.#metrics = watchMetrics(options.metrics);
    this.#metrics?.complete.set(1);
  }

  /** Writes the watch's mark, learns the live servers and starts the background check. */
  async start(): Promise<void> {
    await this.#options.registry.markServer(this.#markId, this.#markTtlSeconds);
    await this.check();
    this.#options.redis.on('ready', this.#onReady);
    this.#schedule();
  }

  close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#options.redis.off('ready', this.#onReady);
    return (this.#next ?? this.#running ?? Promise.resolve()).catch(() => undefined);
  }

  /** Whether the last check found the registry complete. */
  get complete(): boolean {
    return this.#restoring === undefined;
  }

  /** The servers whose load report the watch has seen within a report's TTL. */
  get knownServers(): readonly string[] {
    return [...this.#known.keys()];
  }

  now(): number {
    return (this.#options.now ?? Date.now)();
  }

  async confirm(readAt: number): Promise<void> {
    await this.check();
    const restoring = this.#restoring;
    if (restoring) throw new RegistryIncompleteError([...restoring.waitingFor.keys()], restoring.since);
    // Whole now, but lost and restored since the read began: the read may have seen a part.
    if (readAt <= this.#wholeSince) throw new RegistryIncompleteError([], this.#wholeSince);
  }

  /** Runs a check that starts now or, if one is running, right after it. */
  check(): Promise<void> {
    if (!this.#running) {
      this.#running = this.#checkOnce().finally(() => (this.#running = undefined));
      return this.#running;
    }
    this.#next ??= this.#running
      .catch(() => undefined)
      .then(() => {
        this.#next = undefined;
        return this.check();
      });
    return this.#next;
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.check()
        .catch((err: unknown) => {
          if (this.#closed) return;
          this.#metrics?.failures.inc();
          this.#log.warn({ err }, 'checking whether Redis lost the registry failed; checking again');
        })
        .finally(() => this.#schedule());
    }, this.#options.checkMs ?? 1_000);
    this.#timer.unref();
  }

  async #checkOnce(): Promise<void> {
    try {
      await this.#checkAnswered();
    } catch (err) {
      this.#blind = true;
      throw err;
    }
  }

  async #checkAnswered(): Promise<void> {
    const { registry } = this.#options;
    const mark = await registry.checkServer(this.#markId, this.#markTtlSeconds);
    const now = this.now();
    if (mark.lost) {
      // Every server live at the last check that answered, however long ago: after an outage of
      // Redis the watch has seen nothing for its length, and the servers are still there.
      const first = this.#wait(now, this.#known.keys());
      // Written after the state above: a check that finds the mark back finds the state too.
      await registry.markServer(this.#markId, this.#markTtlSeconds, mark);
      this.#log.warn(
        { shards: mark.lostShards, waitingFor: this.#waitingFor() },
        'Redis lost registry data; negative answers wait until every connection server has written its entries back',
      );
      if (first) this.#turnedIncomplete();
    }
    const live = await registry.liveServers();
    const liveIds = new Set(live.map((s) => s.serverId));
    // Looked at once the list is read: a check queued while Redis was away and answered after the
    // reconnect must see the reconnect's flag ('ready' is emitted before any reply is read).
    if (this.#blind) {
      this.#blind = false;
      const unlisted = [...this.#listed].filter((id) => !liveIds.has(id));
      if (unlisted.length > 0) {
        const first = this.#wait(now, unlisted);
        this.#log.warn(
          { unlisted, waitingFor: this.#waitingFor() },
          'Redis was unreachable and connection servers listed before are missing now (their load reports expired meanwhile?); negative answers wait until they report again or a report TTL passes',
        );
        if (first) this.#turnedIncomplete();
      }
    }
    this.#listed = liveIds;
    for (const id of liveIds) this.#known.set(id, now);
    for (const [id, seen] of this.#known) if (now - seen >= this.#goneAfterMs) this.#known.delete(id);
    const restoring = this.#restoring;
    if (!restoring) return;
    // A server the watch never saw before the loss, listed again but not marked, is restoring too.
    const marked = await registry.serversMarked([...new Set([...restoring.waitingFor.keys(), ...liveIds])]);
    for (const id of liveIds)
      if (!marked.has(id) && !restoring.waitingFor.has(id)) restoring.waitingFor.set(id, now);
    for (const [id, waitingSince] of restoring.waitingFor) {
      const gone = !liveIds.has(id) && now - waitingSince >= this.#goneAfterMs;
      // Marked and listed: its entries are back and broadcasts find it again.
      if ((marked.has(id) && liveIds.has(id)) || gone) restoring.waitingFor.delete(id);
    }
    if (restoring.waitingFor.size === 0 && this.#restoring === restoring) {
      this.#restoring = undefined;
      // After this check's reads: a read that began before them may have seen a part.
      this.#wholeSince = this.now();
      this.#log.warn(
        { restoringForMs: now - restoring.since },
        'every connection server has written its entries back; the registry is complete again',
      );
      this.#metrics?.complete.set(1);
      this.#options.onChange?.(true);
    }
  }

  /** Enters (or extends) the restoring state, waiting for `serverIds` from `now`; true when it entered it. */
  #wait(now: number, serverIds: Iterable<string>): boolean {
    const first = this.#restoring === undefined;
    const restoring = (this.#restoring ??= { since: now, waitingFor: new Map() });
    for (const id of serverIds) if (!restoring.waitingFor.has(id)) restoring.waitingFor.set(id, now);
    return first;
  }

  #waitingFor(): string[] {
    return [...(this.#restoring?.waitingFor.keys() ?? [])];
  }

  #turnedIncomplete(): void {
    this.#metrics?.complete.set(0);
    this.#options.onChange?.(false);
  }
}
