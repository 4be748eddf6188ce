import { DeliveryEvent, StoredMessage, type DeliveryOutcome } from '@pushline/protocol';
import { sendAll, sendAllSettled, type BatchCall, type RedisClient } from '@pushline/registry';
import { backoffMs, closeOnce } from '@pushline/runtime';
import { Counter, Gauge, Registry, stageCounter, type Logger } from '@pushline/telemetry';
import { offlineKeys, offlinePartitions } from './redis-offline-store.ts';

/** The consumer group every relay reads the outbox through: each entry goes to one relay. */
const GROUP = 'relay';

export interface OutboxRelayOptions {
  /** A connected ioredis client (one Redis or a cluster); the relay does not own it (its commands never block). */
  readonly redis: RedisClient;
  /** The offline store's key prefix. */
  readonly keyPrefix: string;
  /** The offline store's partitions (its `partitions` option): the relay reads every partition's outbox. */
  readonly partitions?: number;
  /**
   * Writes events to the delivery-events topic and resolves once they are durable (acks=all).
   * The entries are deleted only after it resolves: a failure keeps them for the next attempt.
   */
  readonly publish: (events: readonly DeliveryEvent[]) => Promise<void>;
  /** This relay's name in the group, unique per process (the instance id); stable across restarts is best. */
  readonly consumer: string;
  readonly logger: Logger;
  /** Where the relay's counters are registered. Default: none. */
  readonly metrics?: Registry;
  /** Entries published at once. Default 200. */
  readonly batch?: number;
  /** Pause between looks at an empty outbox; `kick()` cuts it short. Default 250 ms. */
  readonly intervalMs?: number;
  /** Entries another relay took and left unacknowledged this long are taken over (it died). Default 30 000 ms. */
  readonly claimIdleMs?: number;
  /**
   * Longest one publish may take before it counts as failed and its entries are tried again (a
   * publish that succeeds after it is published twice). Default 15 000 ms.
   */
  readonly publishTimeoutMs?: number;
  /** Longest `close()` waits for a publish in progress; what it leaves is taken over later. Default 5 000 ms. */
  readonly closeTimeoutMs?: number;
}

type StreamEntry = [id: string, fields: string[]];

/** Entries read from one partition's outbox. */
interface PartitionEntries {
  readonly partition: number;
  readonly entries: StreamEntry[];
}

interface RelayMetrics {
  published: Counter;
  failures: Counter<'step'>;
  claimed: Counter;
  dropped: Counter;
  backlog: Gauge;
}

/**
 * Publishes the terminal outcomes the offline store wrote to its outbox stream, then deletes
 * them: an outcome is never lost when Kafka fails, it waits in Redis until a publish succeeds.
 * Any number of relays (one per process that uses the store) share the outbox through a consumer
 * group, so each entry is published by one of them; entries a dead relay held are taken over
 * after `claimIdleMs`. Delivery to Kafka is at least once: a relay that dies between publishing
 * and deleting leaves entries that are published again.
 */
export class OutboxRelay {
  readonly #options: Required<Omit<OutboxRelayOptions, 'metrics' | 'partitions'>>;
  /** Each partition's outbox stream. */
  readonly #streams: string[];
  readonly #log: Logger;
  readonly #metrics: RelayMetrics;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #started = false;
  #closed = false;
  #failures = 0;
  /** Partitions whose stream has the group (created, or found there). */
  readonly #groupReady = new Set<number>();
  /** Partitions where this relay may hold read but unacknowledged entries (all, after a start). */
  readonly #mayHoldPending = new Set<number>();
  #lastClaimAt = 0;
  readonly close: () => Promise<void>;

  constructor(options: OutboxRelayOptions) {
    this.#options = {
      batch: 200,
      intervalMs: 250,
      claimIdleMs: 30_000,
      publishTimeoutMs: 15_000,
      closeTimeoutMs: 5_000,
      ...options,
    };
    const keys = offlineKeys(options.keyPrefix, offlinePartitions(options.redis, options.partitions));
    this.#streams = Array.from({ length: keys.partitions }, (_, p) => keys.outbox(p));
    for (let p = 0; p < this.#streams.length; p++) this.#mayHoldPending.add(p);
    this.#log = options.logger.child({ component: 'outbox-relay' });
    this.#metrics = createMetrics(options.metrics);
    this.close = closeOnce(() => this.#close());
  }

  /** Starts the background loop; the first look happens at once. */
  start(): Promise<void> {
    this.#started = true;
    this.kick();
    return Promise.resolve();
  }

  /** Looks at the outbox now instead of at the next poll (something was just written to it). */
  kick(): void {
    if (!this.#started || this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#schedule(0);
  }

  /**
   * Publishes what the outbox holds for this relay now, until nothing is left, and returns how
   * many events it published; throws what a step threw. For tests and tools: the loop does the
   * same in the background.
   */
  async flush(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.#step(true);
      total += n;
      if (n === 0) return total;
    }
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#running = this.#loop().finally(() => {
        this.#running = undefined;
      });
    }, delayMs);
  }

  async #loop(): Promise<void> {
    let next = this.#options.intervalMs;
    try {
      this.#again = false;
      const published = await this.#step(false);
      this.#failures = 0;
      if (published >= this.#options.batch || this.#again) next = 0;
    } catch (err) {
      this.#failures++;
      next = Math.max(this.#options.intervalMs, backoffMs(this.#failures, this.#options.intervalMs, 30_000));
      this.#log.error(
        { err, failures: this.#failures, retryInMs: next },
        'relaying offline outcomes failed; they stay in the outbox',
      );
    }
    this.#schedule(next);
  }

  /**
   * One round over every partition: this relay's unacknowledged entries first, then a dead
   * relay's, then new ones. Reads go to all partitions at once (one round trip per node); what
   * they bring is published in batches of `batch`, each acknowledged and deleted once Kafka has it.
   */
  async #step(claimNow: boolean): Promise<number> {
    await this.#ensureGroups();
    let found = await this.#read('0', [...this.#mayHoldPending]);
    if (count(found) === 0 && (claimNow || Date.now() - this.#lastClaimAt >= this.#options.claimIdleMs / 2)) {
      this.#lastClaimAt = Date.now();
      found = await this.#claimAbandoned();
    }
    if (count(found) === 0)
      found = await this.#read(
        '>',
        this.#streams.map((_, p) => p),
      );
    if (count(found) === 0) {
      const lengths = await this.#redis(() =>
        sendAll(
          this.#options.redis,
          this.#streams.map((key): BatchCall => ['xlen', key]),
        ),
      );
      this.#metrics.backlog.set(lengths.reduce<number>((sum, n) => sum + Number(n), 0));
      return 0;
    }
    // Entries read are pending for this relay until acknowledged: a failed publish leaves them
    // for the next round's own-pending read.
    for (const { partition } of found) this.#mayHoldPending.add(partition);
    let done = 0;
    for (const chunk of chunks(found, this.#options.batch)) {
      const events: DeliveryEvent[] = [];
      for (const { entries } of chunk) {
        for (const [id, fields] of entries) {
          const event = this.#event(id, fields);
          if (event) events.push(event);
        }
      }
      if (events.length > 0) {
        try {
          await bounded(this.#options.publish(events), this.#options.publishTimeoutMs);
        } catch (err) {
          this.#metrics.failures.inc({ step: 'publish' });
          throw err;
        }
      }
      await this.#redis(() =>
        Promise.all(
          chunk.map(({ partition, entries }) => {
            const ids = entries.map(([id]) => id);
            const key = this.#streams[partition] as string;
            return this.#options.redis
              .multi()
              .xack(key, GROUP, ...ids)
              .xdel(key, ...ids)
              .exec();
          }),
        ),
      );
      this.#metrics.published.inc(events.length);
      done += chunk.reduce((sum, c) => sum + c.entries.length, 0);
    }
    return done;
  }

  /** Reads `from` ('0': this relay's pending entries, '>': new ones) in the given partitions. */
  async #read(from: '0' | '>', partitions: readonly number[]): Promise<PartitionEntries[]> {
    if (partitions.length === 0) return [];
    const replies = await this.#redis(() =>
      sendAllSettled(
        this.#options.redis,
        partitions.map((p): BatchCall => [
          'xreadgroup',
          'GROUP',
          GROUP,
          this.#options.consumer,
          'COUNT',
          this.#options.batch,
          'STREAMS',
          this.#streams[p] as string,
          from,
        ]),
      ),
    );
    const found: PartitionEntries[] = [];
    const acks: BatchCall[] = [];
    let failure: Error | undefined;
    replies.forEach((reply, i) => {
      const partition = partitions[i] as number;
      if (reply.error) {
        if (reply.error.message.startsWith('NOGROUP')) this.#groupReady.delete(partition);
        failure ??= reply.error;
        return;
      }
      const streams = reply.value as [string, [string, string[] | null][]][] | null;
      const entries: StreamEntry[] = [];
      const gone: string[] = [];
      for (const [id, fields] of streams?.[0]?.[1] ?? []) {
        if (Array.isArray(fields)) entries.push([id, fields]);
        else gone.push(id);
      }
      // Pending here but deleted from the stream (another relay took it over and published it):
      // only the acknowledgement is left to do.
      if (gone.length > 0) acks.push(['xack', this.#streams[partition] as string, GROUP, ...gone]);
      if (entries.length > 0) found.push({ partition, entries });
      else if (from === '0' && gone.length === 0) this.#mayHoldPending.delete(partition);
    });
    if (acks.length > 0) await this.#redis(() => sendAll(this.#options.redis, acks));
    if (failure && found.length === 0) {
      this.#metrics.failures.inc({ step: 'redis' });
      throw failure;
    }
    if (failure) this.#log.warn({ err: failure }, 'reading part of the outbox failed; the rest is relayed');
    return found;
  }

  async #claimAbandoned(): Promise<PartitionEntries[]> {
    const replies = await this.#redis(() =>
      sendAll(
        this.#options.redis,
        this.#streams.map((key): BatchCall => [
          'xautoclaim',
          key,
          GROUP,
          this.#options.consumer,
          this.#options.claimIdleMs,
          '0-0',
          'COUNT',
          this.#options.batch,
        ]),
      ),
    );
    const found: PartitionEntries[] = [];
    replies.forEach((reply, partition) => {
      const answer = reply as [string, StreamEntry[], ...unknown[]];
      const entries = (answer[1] ?? []).filter((e) => Array.isArray(e?.[1]));
      if (entries.length > 0) found.push({ partition, entries });
    });
    const claimed = count(found);
    if (claimed > 0) {
      this.#metrics.claimed.inc(claimed);
      this.#log.warn({ entries: claimed }, 'took over outcomes a relay that died left unpublished');
    }
    return found;
  }

  /** Creates the group on first use, and again after Redis lost it (a restart without persistence). */
  async #ensureGroups(): Promise<void> {
    const missing = this.#streams.map((_, p) => p).filter((p) => !this.#groupReady.has(p));
    if (missing.length === 0) return;
    const replies = await sendAllSettled(
      this.#options.redis,
      missing.map((p): BatchCall => ['xgroup', 'CREATE', this.#streams[p] as string, GROUP, '0', 'MKSTREAM']),
    );
    let failure: Error | undefined;
    replies.forEach((reply, i) => {
      if (!reply.error || reply.error.message.startsWith('BUSYGROUP'))
        this.#groupReady.add(missing[i] as number);
      else failure ??= reply.error;
    });
    if (failure) {
      this.#metrics.failures.inc({ step: 'redis' });
      throw failure;
    }
  }

  async #redis<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('NOGROUP')) this.#groupReady.clear();
      this.#metrics.failures.inc({ step: 'redis' });
      throw err;
    }
  }

  /** The event an entry stands for; an unreadable entry is logged, counted and dropped. */
  #event(id: string, fields: string[]): DeliveryEvent | undefined {
    const f = new Map<string, string>();
    for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i] as string, fields[i + 1] as string);
    try {
      const msg = StoredMessage.parse(JSON.parse(f.get('m') ?? ''));
      const at = Number(f.get('t'));
      const attempts = f.get('a') ? Number(f.get('a')) : msg.attempts;
      const reason = f.get('r') ?? '';
      return DeliveryEvent.parse({
        v: 1,
        requestId: msg.requestId,
        target: msg.target,
        deviceId: f.get('d'),
        outcome: f.get('o') as DeliveryOutcome,
        terminal: true,
        source: 'offline',
        latencyMs: Math.max(0, at - msg.createdAt),
        attempts: Math.max(1, attempts),
        at,
        ...(reason === '' ? {} : { reason }),
      });
    } catch (err) {
      this.#metrics.dropped.inc();
      this.#log.error({ err, entry: id }, 'dropping an unreadable outbox entry');
      return undefined;
    }
  }

  async #close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    const running = this.#running;
    if (!running) return;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      running.then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), this.#options.closeTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      this.#log.warn(
        { closeTimeoutMs: this.#options.closeTimeoutMs },
        'outbox relay closed with a publish in progress; another relay takes its entries over',
      );
    }
  }
}

function count(found: readonly PartitionEntries[]): number {
  return found.reduce((sum, f) => sum + f.entries.length, 0);
}

/** Splits what was read into publishes of about `size` events, keeping each partition's entries in order. */
function chunks(found: readonly PartitionEntries[], size: number): PartitionEntries[][] {
  const out: PartitionEntries[][] = [];
  let current: PartitionEntries[] = [];
  let n = 0;
  for (const f of found) {
    for (let i = 0; i < f.entries.length; i += size) {
      const part = { partition: f.partition, entries: f.entries.slice(i, i + size) };
      if (n > 0 && n + part.entries.length > size) {
        out.push(current);
        current = [];
        n = 0;
      }
      current.push(part);
      n += part.entries.length;
    }
  }
  if (current.length > 0) out.push(current);
  return out;
}

class PublishTimeoutError extends Error {
  override readonly name = 'PublishTimeoutError';
}

async function bounded(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PublishTimeoutError(`publish took over ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function createMetrics(registry: Registry | undefined): RelayMetrics {
  const registers = registry ? [registry] : [];
  const existing = <T>(name: string): T | undefined => registry?.getSingleMetric(name) as T | undefined;
  return {
    published:
      existing<Counter>('pushline_offline_outbox_published_total') ??
      new Counter({
        name: 'pushline_offline_outbox_published_total',
        help: 'Terminal outcomes of stored messages the outbox relay published to Kafka.',
        registers,
      }),
    failures:
      existing<Counter<'step'>>('pushline_offline_outbox_failures_total') ??
      stageCounter({
        name: 'pushline_offline_outbox_failures_total',
        help: 'Failed outbox relay steps, by step (publish: Kafka, redis); the outcomes stay in the outbox.',
        labels: { step: ['publish', 'redis'] },
        registry: registry ?? new Registry(),
      }),
    claimed:
      existing<Counter>('pushline_offline_outbox_claimed_total') ??
      new Counter({
        name: 'pushline_offline_outbox_claimed_total',
        help: 'Outbox entries taken over from a relay that left them unpublished (it died).',
        registers,
      }),
    dropped:
      existing<Counter>('pushline_offline_outbox_dropped_total') ??
      new Counter({
        name: 'pushline_offline_outbox_dropped_total',
        help: 'Unreadable outbox entries dropped (logged).',
        registers,
      }),
    backlog:
      existing<Gauge>('pushline_offline_outbox_backlog') ??
      new Gauge({
        name: 'pushline_offline_outbox_backlog',
        help: 'Outbox entries not yet published (all relays), as of this relay’s last look that found nothing for it.',
        registers,
      }),
  };
}
