import type { ConnectionEvent } from '@pushline/protocol';
import type { DeviceRecord, DeviceRegistry } from '@pushline/registry';
import {
  SpanKind,
  stageCounter,
  trace,
  withSpan,
  type Counter,
  type Registry,
  type Tracer,
} from '@pushline/telemetry';

export interface DeviceLocatorOptions {
  readonly registry: DeviceRegistry;
  /** Cached devices (found or not) before the least recently used is dropped. Default 100 000. */
  readonly maxEntries?: number;
  /** How long a found record is trusted. Default 30 000 ms. */
  readonly ttlMs?: number;
  /**
   * How long "not registered" is kept. The router confirms every negative answer against the
   * registry before it reports `not_connected` (a device must be routable as soon as it is
   * registered), so a negative entry saves no read on that path; concurrent lookups of a device
   * share one registry read whatever this is. Default 0: not kept.
   */
  readonly negativeTtlMs?: number;
  /** When given, counts lookups as `pushline_locator_lookups_total{result}`. */
  readonly metrics?: Registry;
  /** Traces registry reads as `registry lookup` spans. Default: the global `pushline-delivery` tracer. */
  readonly tracer?: Tracer;
}

export interface LocatorStats {
  /** Answered from a cached record. */
  readonly hits: number;
  /** Answered from a cached "not registered". */
  readonly negativeHits: number;
  /** Not answered from the cache (including callers that joined another caller's registry read). */
  readonly misses: number;
  /** Registry reads actually made; lower than `misses` when concurrent lookups shared one. */
  readonly registryReads: number;
  readonly size: number;
}

interface Entry {
  readonly record: DeviceRecord | null;
  readonly expiresAt: number;
}

interface Flight {
  readonly promise: Promise<DeviceRecord | null>;
  /** Set when the cache was invalidated during the read: its answer may predate the change. */
  stale: boolean;
}

/**
 * Device → record lookups with an in-process LRU cache in front of the registry: the routing hot
 * path (direct push, device-to-device) reads the registry once per device per TTL, not per message.
 * Correctness never rests on the cache: deliveries carry the connection id, a stale entry produces
 * `not_connected`, and the router then invalidates and re-reads.
 */
export class DeviceLocator {
  readonly #registry: DeviceRegistry;
  readonly #maxEntries: number;
  readonly #ttlMs: number;
  readonly #negativeTtlMs: number;
  readonly #tracer: Tracer;
  readonly #lookups: Counter<'result'> | undefined;
  // A Map iterates in insertion order; re-inserting on every hit makes the first key the LRU one.
  readonly #cache = new Map<string, Entry>();
  readonly #flights = new Map<string, Flight>();
  #hits = 0;
  #negativeHits = 0;
  #misses = 0;
  #reads = 0;

  constructor(options: DeviceLocatorOptions) {
    this.#registry = options.registry;
    this.#maxEntries = options.maxEntries ?? 100_000;
    this.#ttlMs = options.ttlMs ?? 30_000;
    this.#negativeTtlMs = options.negativeTtlMs ?? 0;
    this.#tracer = options.tracer ?? trace.getTracer('pushline-delivery');
    this.#lookups = options.metrics
      ? stageCounter({
          name: 'pushline_locator_lookups_total',
          help: 'Device lookups by result: hit, negative_hit (cached "not registered") or miss (registry read).',
          labels: { result: ['hit', 'negative_hit', 'miss'] },
          registry: options.metrics,
        })
      : undefined;
  }

  get stats(): LocatorStats {
    return {
      hits: this.#hits,
      negativeHits: this.#negativeHits,
      misses: this.#misses,
      registryReads: this.#reads,
      size: this.#cache.size,
    };
  }

  /** The device's current record (null: not connected anywhere); `cached` tells whether the registry was skipped. */
  async lookup(deviceId: string): Promise<{ record: DeviceRecord | null; cached: boolean }> {
    const entry = this.#cache.get(deviceId);
    if (entry) {
      this.#cache.delete(deviceId);
      if (entry.expiresAt > Date.now()) {
        this.#cache.set(deviceId, entry);
        if (entry.record) {
          this.#hits++;
          this.#lookups?.inc({ result: 'hit' });
        } else {
          this.#negativeHits++;
          this.#lookups?.inc({ result: 'negative_hit' });
        }
        return { record: entry.record, cached: true };
      }
    }
    this.#misses++;
    this.#lookups?.inc({ result: 'miss' });
    let flight = this.#flights.get(deviceId);
    if (!flight) {
      flight = this.#read(deviceId);
      this.#flights.set(deviceId, flight);
    }
    return { record: await flight.promise, cached: false };
  }

  /**
   * Forgets the device. With `connectionId`, only if the cached record is that connection's, so a
   * late failure report about an old connection does not evict the fresh entry.
   */
  invalidate(deviceId: string, connectionId?: string): void {
    this.#abandonFlight(deviceId);
    if (connectionId === undefined) {
      this.#cache.delete(deviceId);
      return;
    }
    if (this.#cache.get(deviceId)?.record?.connectionId === connectionId) this.#cache.delete(deviceId);
  }

  /**
   * Keeps the cache right from the connection-events topic. `connected` drops the entry (the event
   * lacks the server URL, so the next lookup reads the new record); that also ends a negative
   * entry, so a device is reachable as soon as it connects. `disconnected` drops the entry only if
   * it is that connection's: events of an old connection can arrive after the new one's.
   */
  applyConnectionEvent(ev: ConnectionEvent): void {
    if (ev.type === 'connected') this.invalidate(ev.deviceId);
    else this.invalidate(ev.deviceId, ev.connectionId);
  }

  /** Drops every entry (e.g. after losing the connection-events stream for a while). */
  clear(): void {
    this.#cache.clear();
    for (const id of [...this.#flights.keys()]) this.#abandonFlight(id);
  }

  #read(deviceId: string): Flight {
    this.#reads++;
    const flight: Flight = {
      stale: false,
      promise: withSpan(
        this.#tracer,
        'registry lookup',
        { kind: SpanKind.CLIENT, attributes: { 'db.operation.name': 'lookup' } },
        async (span) => {
          const record = await this.#registry.lookup(deviceId);
          span.setAttribute('pushline.found', record !== null);
          return record;
        },
      ).then(
        (record) => {
          this.#settle(deviceId, flight);
          if (!flight.stale) this.#store(deviceId, record);
          return record;
        },
        (err: unknown) => {
          this.#settle(deviceId, flight);
          throw err;
        },
      ),
    };
    return flight;
  }

  #settle(deviceId: string, flight: Flight): void {
    if (this.#flights.get(deviceId) === flight) this.#flights.delete(deviceId);
  }

  // Later callers start a new read instead of joining one that may predate the change.
  #abandonFlight(deviceId: string): void {
    const flight = this.#flights.get(deviceId);
    if (!flight) return;
    flight.stale = true;
    this.#flights.delete(deviceId);
  }

  #store(deviceId: string, record: DeviceRecord | null): void {
    const ttl = record ? this.#ttlMs : this.#negativeTtlMs;
    if (ttl <= 0 || this.#maxEntries <= 0) return;
    this.#cache.delete(deviceId);
    this.#cache.set(deviceId, { record, expiresAt: Date.now() + ttl });
    while (this.#cache.size > this.#maxEntries) {
      const oldest = this.#cache.keys().next();
      if (oldest.done) break;
      this.#cache.delete(oldest.value);
    }
  }
}
