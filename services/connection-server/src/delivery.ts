import { performance } from 'node:perf_hooks';
import type { Context, Logger, Tracer } from '@pushline/telemetry';
import { extractTraceContext, injectTraceHeaders, SpanKind, trace, withSpan } from '@pushline/telemetry';
import {
  DeviceEvents,
  DeviceMessageAck,
  type DeliverRequest,
  type DeliverResult,
  type DeviceMessage,
  type StoredMessage,
} from '@pushline/protocol';
import type { DeviceConnection } from './connection.ts';
import { d2dAllowed, type D2dPolicy } from './d2d.ts';
import type { LocalDevices } from './local-devices.ts';
import type { ConnectionServerMetrics } from './metrics.ts';

export interface LocalDeliveryOptions {
  readonly devices: LocalDevices;
  readonly metrics: ConnectionServerMetrics;
  readonly tracer: Tracer;
  readonly logger: Logger;
  /** Message ids remembered per connection for dedupe (PUSHLINE_DEDUPE_WINDOW). */
  readonly dedupeWindow: number;
  /** PUSHLINE_D2D_POLICY, checked here against the live connection for every device-to-device message. */
  readonly d2dPolicy: D2dPolicy;
}

/**
 * The key a message id is remembered under on a connection. Ids are chosen by their senders, so
 * each sender gets its own namespace: a device-to-device id per sending device, a backend id per
 * origin (API key), otherwise a sibling device or another API key could send id X first and make
 * a later message X look like a duplicate that is never sent. A backend message without an origin
 * (a record produced straight into Kafka) keeps the bare id. A space separates the parts because
 * no identifier or message id may contain one.
 */
function dedupeKey(req: DeliverRequest): string {
  if (req.source === 'd2d') return `d2d ${req.from ?? ''} ${req.messageId}`;
  return req.origin === undefined ? req.messageId : `origin ${req.origin} ${req.messageId}`;
}

/**
 * Hands one message to one device connected to this server and reports exactly one outcome:
 * delivered (acked `{ok:true}` in time), rejected (acked `{ok:false}` or an unreadable ack),
 * timeout (no ack in time, or the connection closed after the message was emitted: it may have
 * arrived), or not_connected (not here, another connection, or gone before the emit).
 */
export class LocalDelivery {
  readonly #options: LocalDeliveryOptions;

  constructor(options: LocalDeliveryOptions) {
    this.#options = options;
  }

  /**
   * Delivers to the device's current connection. Waits for the connection's offline-inbox drain
   * first; that wait counts against `req.timeoutMs`.
   */
  deliver(req: DeliverRequest, kind: SpanKind = SpanKind.INTERNAL): Promise<DeliverResult> {
    return this.#traced(req, kind, (ctx) => this.#deliverLive(req, ctx));
  }

  /** Delivers a message from the offline inbox to `conn` (the drain itself, so no gate). */
  deliverStored(conn: DeviceConnection, msg: StoredMessage, timeoutMs: number): Promise<DeliverResult> {
    const req: DeliverRequest = {
      messageId: msg.requestId,
      deviceId: conn.deviceId,
      connectionId: conn.connectionId,
      payload: msg.payload,
      source: 'offline',
      ...(msg.origin === undefined ? {} : { origin: msg.origin }),
      timeoutMs,
      ...(msg.traceparent
        ? {
            trace: {
              traceparent: msg.traceparent,
              ...(msg.tracestate ? { tracestate: msg.tracestate } : {}),
            },
          }
        : {}),
    };
    return this.#traced(req, SpanKind.INTERNAL, (ctx) => this.#send(conn, req, timeoutMs, ctx));
  }

  async #traced(
    req: DeliverRequest,
    kind: SpanKind,
    fn: (ctx: Context) => Promise<DeliverResult>,
  ): Promise<DeliverResult> {
    const parent = extractTraceContext(req.trace);
    const result = await withSpan(
      this.#options.tracer,
      'deliver',
      {
        kind,
        parent,
        attributes: { 'messaging.message.id': req.messageId, 'pushline.source': req.source },
      },
      async (span) => {
        let r: DeliverResult;
        try {
          // Passed explicitly: the device ack span must be this span's child with or without a context manager.
          r = await fn(trace.setSpan(parent, span));
        } catch (err) {
          // Never leave a request without an outcome; an unexpected error means it was not delivered.
          this.#options.logger.error({ err, messageId: req.messageId }, 'local delivery failed');
          r = { outcome: 'not_connected', latencyMs: 0, reason: 'internal_error' };
        }
        span.setAttribute('pushline.outcome', r.outcome);
        if (r.duplicate) span.setAttribute('pushline.duplicate', true);
        return r;
      },
    );
    this.#options.metrics.deliveries.inc({ source: req.source, outcome: result.outcome });
    return result;
  }

  async #deliverLive(req: DeliverRequest, ctx: Context): Promise<DeliverResult> {
    const conn = this.#options.devices.get(req.deviceId);
    if (!conn || conn.closed) return { outcome: 'not_connected', latencyMs: 0, reason: 'not_here' };
    if (req.connectionId !== undefined && req.connectionId !== conn.connectionId) {
      return { outcome: 'not_connected', latencyMs: 0, reason: 'connection_replaced' };
    }
    // The sender's server checked a registry record that may be stale (or re-read after a miss);
    // the connection here is the truth. Refused like an offline device, so nothing leaks.
    if (
      req.source === 'd2d' &&
      !d2dAllowed(this.#options.d2dPolicy, { userId: req.fromUser, tenantId: req.fromTenant }, conn)
    ) {
      return { outcome: 'not_connected', latencyMs: 0, reason: 'd2d_policy' };
    }
    const started = performance.now();
    const gate = conn.gate;
    if (gate) {
      const waited = await waitFor(conn, gate, req.timeoutMs);
      if (waited === 'closed') return { outcome: 'not_connected', latencyMs: 0, reason: 'disconnected' };
      if (waited === 'timeout') {
        return { outcome: 'timeout', latencyMs: performance.now() - started, reason: 'inbox_drain' };
      }
    }
    const remaining = Math.max(1, Math.round(req.timeoutMs - (performance.now() - started)));
    return this.#send(conn, req, remaining, ctx);
  }

  /** Emits unless this id was already settled on this connection (dedupe), then awaits the ack. */
  async #send(
    conn: DeviceConnection,
    req: DeliverRequest,
    timeoutMs: number,
    ctx: Context,
  ): Promise<DeliverResult> {
    const key = dedupeKey(req);
    const prior = conn.sentMessage(key);
    if (prior?.state === 'pending') return { ...(await prior.result), duplicate: true };
    // A message the device acked (either way) is never sent again on this connection; one that
    // timed out may be retried, since the device never confirmed it.
    if (prior?.state === 'done' && (prior.outcome === 'delivered' || prior.outcome === 'rejected')) {
      return { outcome: prior.outcome, latencyMs: 0, duplicate: true };
    }
    const result = this.#emit(conn, req, timeoutMs, ctx);
    conn.rememberSent(key, { state: 'pending', result }, this.#options.dedupeWindow);
    const settled = await result;
    conn.rememberSent(key, { state: 'done', outcome: settled.outcome }, this.#options.dedupeWindow);
    return settled;
  }

  #emit(
    conn: DeviceConnection,
    req: DeliverRequest,
    timeoutMs: number,
    ctx: Context,
  ): Promise<DeliverResult> {
    const ackSpan = this.#options.tracer.startSpan(
      'device ack',
      { kind: SpanKind.CLIENT, attributes: { 'messaging.message.id': req.messageId } },
      ctx,
    );
    const message: DeviceMessage = {
      id: req.messageId,
      payload: req.payload,
      sentAt: Date.now(),
      ...(req.from !== undefined ? { from: req.from } : {}),
      ...(req.topic !== undefined ? { topic: req.topic } : {}),
      ...injectTraceHeaders(trace.setSpan(ctx, ackSpan)),
    };
    const started = performance.now();
    return new Promise<DeliverResult>((resolve) => {
      let done = false;
      let offClose = () => {};
      const finish = (result: DeliverResult) => {
        if (done) return;
        done = true;
        offClose();
        ackSpan.setAttribute('pushline.outcome', result.outcome);
        ackSpan.end();
        if (result.outcome === 'delivered' || result.outcome === 'rejected') {
          this.#options.metrics.deviceAck.observe({ outcome: result.outcome }, result.latencyMs / 1000);
        }
        resolve(result);
      };
      // Closed before the emit: the message never left, so it is known not delivered.
      if (conn.closed) return finish({ outcome: 'not_connected', latencyMs: 0, reason: 'disconnected' });
      // Closed after the emit (a drain, the device leaving): the device may have the message and
      // its ack may have been on the wire, so this is "may have been delivered", never not_connected.
      offClose = conn.onClose(() =>
        finish({ outcome: 'timeout', latencyMs: performance.now() - started, reason: 'disconnected' }),
      );
      conn.socket
        .timeout(timeoutMs)
        .emit(DeviceEvents.message, message, (err: Error | null, ack: unknown) => {
          const latencyMs = performance.now() - started;
          if (err) return finish({ outcome: 'timeout', latencyMs });
          conn.touch();
          const parsed = DeviceMessageAck.safeParse(ack);
          if (!parsed.success) return finish({ outcome: 'rejected', latencyMs, reason: 'invalid_ack' });
          if (parsed.data.ok) return finish({ outcome: 'delivered', latencyMs });
          finish({
            outcome: 'rejected',
            latencyMs,
            ...(parsed.data.reason ? { reason: parsed.data.reason } : {}),
          });
        });
    });
  }
}

/** Waits for `gate` at most `ms`, or until the connection ends. */
function waitFor(
  conn: DeviceConnection,
  gate: Promise<void>,
  ms: number,
): Promise<'ready' | 'timeout' | 'closed'> {
  return new Promise((resolve) => {
    let offClose = () => {};
    const settle = (how: 'ready' | 'timeout' | 'closed') => {
      clearTimeout(timer);
      offClose();
      resolve(how);
    };
    const timer = setTimeout(() => settle('timeout'), ms);
    offClose = conn.onClose(() => settle('closed'));
    void gate.then(() => settle('ready'));
  });
}
