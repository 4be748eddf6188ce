import {
  DeliverySource,
  type BroadcastRequest,
  type BroadcastResult,
  type DeliverRequest,
  type DeliverResult,
} from '@pushline/protocol';
import type { DeviceRecord, DeviceRegistry, RegistryCompleteness, ServerLoad } from '@pushline/registry';
import {
  LATENCY_BUCKETS_S,
  SpanKind,
  context,
  extractTraceContext,
  injectTraceHeaders,
  stageCounter,
  stageHistogram,
  trace,
  withSpan,
  type Context,
  type Counter,
  type Histogram,
  type Logger,
  type Registry,
  type Tracer,
} from '@pushline/telemetry';
import { DeliveryTransportError, PartialDeliveryError } from './errors.ts';
import type { DeviceLocator } from './locator.ts';
import type { DeliveryTransport, OutgoingMessage, RoutedResult } from './types.ts';

/** The connection server this router runs in, if any: its own devices skip the network. */
export interface LocalServer {
  readonly serverId: string;
  deliver(req: DeliverRequest): Promise<DeliverResult>;
}

export interface MessageRouterOptions {
  readonly locator: DeviceLocator;
  readonly registry: DeviceRegistry;
  readonly transport: DeliveryTransport;
  readonly local?: LocalServer;
  readonly tracer: Tracer;
  readonly logger: Logger;
  /** When given, records `pushline_router_deliveries_total` and `pushline_router_delivery_seconds`. */
  readonly metrics?: Registry;
  /** How long the live-server list used for broadcasts is reused. Default 1000 ms. */
  readonly serversTtlMs?: number;
  /**
   * Asked before the registry's silence becomes an answer (a device not registered, a user's
   * device list, the servers a broadcast goes through): while Redis's lost entries are being
   * written back it rejects with `RegistryIncompleteError`, which the router throws. Without it
   * the registry is trusted as it reads.
   */
  readonly completeness?: RegistryCompleteness;
}

/** Every value of the `outcome` label: a device outcome, or `error` when the delivery threw. */
const ROUTED_OUTCOMES = ['delivered', 'not_connected', 'timeout', 'rejected', 'error'] as const;

/** Connection servers whose span attributes are kept at once. */
const SERVER_ATTRIBUTES_MAX = 1024;

type Resolved = { readonly record: DeviceRecord | null; readonly cached: boolean };

/** The live-server list broadcasts reuse for a while. */
interface LiveServersEntry {
  readonly list: Promise<ServerLoad[]>;
  readonly expiresAt: number;
  /** The completeness watch's clock when the read began (`#readAt()`): what a confirm of this list is asked by. */
  readonly readAt: number;
}

/**
 * Routes a message to a device, a user's devices or a topic: registry (through the locator's
 * cache) → owning connection server → the device's ack, reported as one outcome per device.
 * Shared by every send path: direct push (push-api), device-to-device (connection-server) and the
 * async path (message-processor).
 */
export class MessageRouter {
  readonly #locator: DeviceLocator;
  readonly #registry: DeviceRegistry;
  readonly #transport: DeliveryTransport;
  readonly #local: LocalServer | undefined;
  readonly #tracer: Tracer;
  readonly #logger: Logger;
  readonly #serversTtlMs: number;
  readonly #completeness: RegistryCompleteness | undefined;
  readonly #deliveries: Counter<'source' | 'outcome'> | undefined;
  readonly #seconds: Histogram<'source' | 'outcome'> | undefined;
  readonly #broadcasts: Counter<'result'> | undefined;
  #servers: LiveServersEntry | undefined;
  readonly #attributes = new Map<string, Readonly<Record<string, string | number>>>();

  constructor(options: MessageRouterOptions) {
    this.#locator = options.locator;
    this.#registry = options.registry;
    this.#transport = options.transport;
    this.#local = options.local;
    this.#tracer = options.tracer;
    this.#logger = options.logger;
    this.#serversTtlMs = options.serversTtlMs ?? 1000;
    this.#completeness = options.completeness;
    if (options.metrics) {
      this.#deliveries = stageCounter({
        name: 'pushline_router_deliveries_total',
        help: 'Messages routed to one device, by source and outcome (error: the delivery threw).',
        labels: { source: DeliverySource.options, outcome: ROUTED_OUTCOMES },
        registry: options.metrics,
      });
      this.#seconds = stageHistogram({
        name: 'pushline_router_delivery_seconds',
        help: 'From routing a message to one device to its outcome, lookup and retry included.',
        labels: { source: DeliverySource.options, outcome: ROUTED_OUTCOMES },
        buckets: LATENCY_BUCKETS_S,
        registry: options.metrics,
      });
      this.#broadcasts = stageCounter({
        name: 'pushline_router_broadcasts_total',
        help: 'Topic broadcasts by result (no_server: no live connection server to relay it).',
        labels: { result: ['ok', 'no_server', 'error'] },
        registry: options.metrics,
      });
    }
  }

  /**
   * Looks the device up (cache first) and delivers to its current connection. A negative answer
   * from the cache is never final: `not_connected` is only given once the registry confirms it.
   * A `not_connected` from a cached record means the cache may be stale: the entry is dropped, the
   * registry read once more and, if the device now has another connection, the message is
   * delivered there. While the registry is being restored, "not registered" is no answer: throws
   * `RegistryIncompleteError` (see `completeness`). Throws the transport's typed errors and
   * registry errors; device outcomes are results.
   */
  toDevice(deviceId: string, msg: OutgoingMessage): Promise<RoutedResult> {
    return context.with(parentContext(msg), async () => {
      const started = performance.now();
      const readAt = this.#readAt();
      try {
        const resolved = await withSpan(
          this.#tracer,
          'resolve target',
          { attributes: { 'pushline.target.type': 'device' } },
          async (span) => {
            const found = await this.#locator.lookup(deviceId);
            span.setAttribute('pushline.cache_hit', found.cached);
            return found;
          },
        );
        const result = await this.#route(deviceId, resolved, msg, readAt);
        this.#record(msg, result.outcome, started);
        return result;
      } catch (err) {
        this.#record(msg, 'error', started);
        throw err;
      }
    });
  }

  /**
   * Delivers to every device the user has connected now, in parallel, one result per device
   * (empty when none is connected). The device list is read from the registry each time: it is
   * not cached, because a device missing from a stale list would silently miss the message.
   * When some deliveries throw, throws `PartialDeliveryError` after all have settled.
   */
  toUser(userId: string, msg: OutgoingMessage): Promise<RoutedResult[]> {
    return context.with(parentContext(msg), async () => {
      const records = await withSpan(
        this.#tracer,
        'resolve target',
        { attributes: { 'pushline.target.type': 'user', 'pushline.cache_hit': false } },
        () =>
          withSpan(
            this.#tracer,
            'registry lookup',
            { kind: SpanKind.CLIENT, attributes: { 'db.operation.name': 'userDevices' } },
            async (span) => {
              const readAt = this.#readAt();
              const devices = await this.#registry.userDevices(userId);
              span.setAttribute('pushline.devices', devices.length);
              // A device missing from the list gets no outcome at all: the list must be whole.
              await this.#completeness?.confirm(readAt);
              return devices;
            },
          ),
      );
      const settled = await Promise.allSettled(
        records.map(async (record) => {
          const started = performance.now();
          try {
            const result = await this.#route(record.deviceId, { record, cached: false }, msg, 0);
            this.#record(msg, result.outcome, started);
            return result;
          } catch (err) {
            this.#record(msg, 'error', started);
            throw err;
          }
        }),
      );
      const results: RoutedResult[] = [];
      const errors: unknown[] = [];
      const failedDeviceIds: string[] = [];
      settled.forEach((s, i) => {
        if (s.status === 'fulfilled') results.push(s.value);
        else {
          errors.push(s.reason);
          failedDeviceIds.push(records[i]?.deviceId ?? '');
        }
      });
      if (errors.length > 0) throw new PartialDeliveryError(errors, results, failedDeviceIds);
      return results;
    });
  }

  /**
   * Broadcasts through one live connection server, which reaches the topic's subscribers on every
   * server (the socket.io Redis adapter). Prefers servers that are not draining, picks at random to
   * spread the work, and tries a second server if the first is unreachable. No live server: no
   * subscriber can be connected, so `{ delivered: 0 }`. The list (read or reused) must be one the
   * completeness watch vouches for: while a server may be missing from it (a restore, or reports
   * that expired while Redis was away), throws `RegistryIncompleteError` and forgets the list.
   */
  toTopic(topic: string, msg: OutgoingMessage): Promise<BroadcastResult> {
    return context.with(parentContext(msg), async () => {
      const started = performance.now();
      const servers = await withSpan(
        this.#tracer,
        'resolve target',
        { attributes: { 'pushline.target.type': 'topic' } },
        async (span) => {
          const { list, cached, readAt, entry } = await this.#liveServers();
          span.setAttribute('pushline.cache_hit', cached);
          // A server missing from the list is a subscriber the broadcast misses: the confirm must
          // vouch for this list's read (cached or not), so it is asked by when that read began.
          try {
            await this.#completeness?.confirm(readAt);
          } catch (err) {
            if (this.#servers === entry) this.#servers = undefined;
            throw err;
          }
          return list;
        },
      );
      const tried = new Set<string>();
      for (;;) {
        const server = pickServer(servers, tried);
        if (!server) {
          this.#broadcasts?.inc({ result: 'no_server' });
          return { delivered: 0, latencyMs: performance.now() - started };
        }
        tried.add(server.serverId);
        try {
          return await withSpan(
            this.#tracer,
            'broadcast',
            { kind: SpanKind.CLIENT, attributes: this.#serverAttributes(server.serverUrl, server.serverId) },
            async (span) => {
              const req: BroadcastRequest = {
                messageId: msg.messageId,
                topic,
                payload: msg.payload,
                timeoutMs: msg.timeoutMs,
              };
              const traceHeaders = injectTraceHeaders();
              if (traceHeaders.traceparent) req.trace = traceHeaders;
              const result = await this.#transport.broadcast(server.serverUrl, req);
              span.setAttribute('pushline.delivered', result.delivered);
              this.#broadcasts?.inc({ result: 'ok' });
              return result;
            },
          );
        } catch (err) {
          if (
            !(err instanceof DeliveryTransportError && err.failure === 'server_unreachable') ||
            tried.size >= 2
          ) {
            this.#broadcasts?.inc({ result: 'error' });
            throw err;
          }
          this.#servers = undefined;
          this.#logger.warn(
            { serverId: server.serverId, topic },
            'broadcast server unreachable, trying another',
          );
        }
      }
    });
  }

  /** The completeness watch's clock now, taken before a registry read whose silence may become an answer. */
  #readAt(): number {
    return this.#completeness?.now() ?? 0;
  }

  /** `readAt`: when the read behind `resolved` began (`#readAt()`), for a "not registered" answer. */
  async #route(
    deviceId: string,
    resolved: Resolved,
    msg: OutgoingMessage,
    readAt: number,
  ): Promise<RoutedResult> {
    const { record, cached } = resolved;
    if (!record) {
      // A cached "not registered" may predate the device's connect: only the registry may say
      // not_connected, so a device is routable as soon as presence says it is online.
      if (cached) {
        this.#locator.invalidate(deviceId);
        const fresh = await this.#locator.lookup(deviceId);
        if (fresh.record) return this.#route(deviceId, fresh, msg, readAt);
      }
      await this.#completeness?.confirm(readAt);
      return { outcome: 'not_connected', reason: 'not_registered', latencyMs: 0, deviceId, attempts: 1 };
    }
    const first = await this.#deliver(record, msg, 1);
    if (first.outcome !== 'not_connected') return first;
    this.#locator.invalidate(deviceId, record.connectionId);
    if (!cached) return first;
    // The cached record was stale or the device just moved: ask the registry once more.
    const fresh = await this.#locator.lookup(deviceId);
    if (!fresh.record) return first;
    if (fresh.record.connectionId === record.connectionId) {
      // The registry lags behind the server (the disconnect is not written yet): keep not caching it.
      this.#locator.invalidate(deviceId, record.connectionId);
      return first;
    }
    this.#logger.debug(
      { deviceId, from: record.serverId, to: fresh.record.serverId },
      'device moved since it was cached, delivering to its new connection',
    );
    const second = await this.#deliver(fresh.record, msg, 2);
    if (second.outcome === 'not_connected') this.#locator.invalidate(deviceId, fresh.record.connectionId);
    return second;
  }

  #deliver(record: DeviceRecord, msg: OutgoingMessage, attempt: number): Promise<RoutedResult> {
    const local = this.#local && record.serverId === this.#local.serverId ? this.#local : undefined;
    return withSpan(
      this.#tracer,
      'deliver',
      {
        kind: SpanKind.CLIENT,
        attributes: {
          ...this.#serverAttributes(record.serverUrl, record.serverId),
          'pushline.route': local ? 'local' : 'remote',
          'pushline.source': msg.source,
          'pushline.attempt': attempt,
        },
      },
      async (span) => {
        const req: DeliverRequest = {
          messageId: msg.messageId,
          deviceId: record.deviceId,
          connectionId: record.connectionId,
          payload: msg.payload,
          source: msg.source,
          timeoutMs: msg.timeoutMs,
        };
        if (msg.from !== undefined) req.from = msg.from;
        if (msg.fromUser !== undefined) req.fromUser = msg.fromUser;
        if (msg.fromTenant !== undefined) req.fromTenant = msg.fromTenant;
        if (msg.origin !== undefined) req.origin = msg.origin;
        // The owning server continues the trace from this span, not from the caller's.
        const traceHeaders = injectTraceHeaders();
        if (traceHeaders.traceparent) req.trace = traceHeaders;
        const result = local
          ? await local.deliver(req)
          : await this.#transport.deliver(record.serverUrl, req);
        span.setAttribute('pushline.outcome', result.outcome);
        if (result.reason) span.setAttribute('pushline.reason', result.reason);
        return { ...result, deviceId: record.deviceId, serverId: record.serverId, attempts: attempt };
      },
    );
  }

  async #liveServers(): Promise<{
    list: ServerLoad[];
    cached: boolean;
    readAt: number;
    entry: LiveServersEntry;
  }> {
    const now = Date.now();
    const current = this.#servers;
    if (current && current.expiresAt > now) {
      return { list: await current.list, cached: true, readAt: current.readAt, entry: current };
    }
    const readAt = this.#readAt();
    const list = withSpan(
      this.#tracer,
      'registry lookup',
      { kind: SpanKind.CLIENT, attributes: { 'db.operation.name': 'liveServers' } },
      () => this.#registry.liveServers(),
    );
    const entry: LiveServersEntry = { list, expiresAt: now + this.#serversTtlMs, readAt };
    this.#servers = entry;
    // A failed read is not reused: the next broadcast asks again.
    list.catch(() => {
      if (this.#servers === entry) this.#servers = undefined;
    });
    return { list: await list, cached: false, readAt, entry };
  }

  /** A server's span attributes, parsed once per server: its URL does not change. */
  #serverAttributes(serverUrl: string, serverId: string): Readonly<Record<string, string | number>> {
    const key = `${serverId} ${serverUrl}`;
    let attributes = this.#attributes.get(key);
    if (!attributes) {
      // Servers come and go (a new id per start); a full cache starts over rather than grow.
      if (this.#attributes.size >= SERVER_ATTRIBUTES_MAX) this.#attributes.clear();
      attributes = serverAttributes(serverUrl, serverId);
      this.#attributes.set(key, attributes);
    }
    return attributes;
  }

  #record(msg: OutgoingMessage, outcome: (typeof ROUTED_OUTCOMES)[number], started: number): void {
    this.#deliveries?.inc({ source: msg.source, outcome });
    this.#seconds?.observe({ source: msg.source, outcome }, (performance.now() - started) / 1000);
  }
}

/**
 * The router's spans hang under the caller's active span; a caller without one (a socket handler)
 * can pass the origin's W3C context in `msg.trace` instead.
 */
function parentContext(msg: OutgoingMessage): Context {
  if (trace.getSpan(context.active()) || !msg.trace) return context.active();
  return extractTraceContext(msg.trace);
}

function pickServer(servers: readonly ServerLoad[], exclude: ReadonlySet<string>): ServerLoad | undefined {
  const candidates = servers.filter((s) => !exclude.has(s.serverId));
  const active = candidates.filter((s) => !s.draining);
  // A draining server still relays broadcasts through the adapter; use one only if nothing else is up.
  const pool = active.length > 0 ? active : candidates;
  return pool[Math.floor(Math.random() * pool.length)];
}

function serverAttributes(serverUrl: string, serverId: string): Readonly<Record<string, string | number>> {
  const attributes: Record<string, string | number> = { 'pushline.server.id': serverId };
  try {
    const url = new URL(serverUrl);
    attributes['server.address'] = url.hostname;
    if (url.port) attributes['server.port'] = Number(url.port);
  } catch {
    attributes['server.address'] = serverUrl;
  }
  return Object.freeze(attributes);
}
