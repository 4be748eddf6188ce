import { Counter, Gauge, Histogram, LATENCY_BUCKETS_S, type Registry } from '@pushline/telemetry';

/** Every metric of one connection server, registered on the instance's own registry. */
export interface ConnectionServerMetrics {
  readonly connects: Counter<never>;
  readonly disconnects: Counter<'reason'>;
  readonly authFailures: Counter<'code'>;
  /** Handshakes refused at the upgrade because too many were in flight (admission control). */
  readonly handshakesBusy: Counter<never>;
  /** Every deliver request ends in exactly one outcome: requests received = sum over outcomes. */
  readonly deliveries: Counter<'source' | 'outcome'>;
  readonly deviceAck: Histogram<'outcome'>;
  readonly registryOps: Counter<'op' | 'result'>;
  readonly connectionEvents: Counter<'result'>;
  readonly d2d: Counter<'outcome'>;
  readonly broadcasts: Counter<'result'>;
  readonly subscriptions: Counter<'op' | 'result'>;
  /** Device requests answered (or dropped) before they reached their handler. */
  readonly requestsRefused: Counter<'event' | 'reason'>;
  /** Token refreshes and expiries during connections. */
  readonly tokenLifecycle: Counter<'event'>;
  /** Transports closed for holding a handshake without asking to join, or refused per address. */
  readonly handshakesRefused: Counter<'reason'>;
  readonly reconnectHints: Counter<'reason'>;
  readonly loopFailures: Counter<'loop'>;
  readonly loopRuns: Counter<'loop'>;
  readonly internalRequests: Counter<'route' | 'status'>;
}

export function createMetrics(registry: Registry, connectionCount: () => number): ConnectionServerMetrics {
  const registers = [registry];
  new Gauge({
    name: 'pushline_connections',
    help: 'Authenticated device connections held by this server.',
    registers,
    collect() {
      this.set(connectionCount());
    },
  });
  return {
    connects: new Counter({
      name: 'pushline_connects_total',
      help: 'Device connections accepted after authentication.',
      registers,
    }),
    disconnects: new Counter({
      name: 'pushline_disconnects_total',
      help: 'Device connections ended, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    authFailures: new Counter({
      name: 'pushline_auth_failures_total',
      help: 'Refused device handshakes, by reason code.',
      labelNames: ['code'],
      registers,
    }),
    handshakesBusy: new Counter({
      name: 'pushline_handshakes_busy_total',
      help: 'Device handshakes refused at the upgrade because too many were already in flight.',
      registers,
    }),
    deliveries: new Counter({
      name: 'pushline_server_deliveries_total',
      help: 'Messages this server was asked to hand to a local device, by source and outcome.',
      labelNames: ['source', 'outcome'],
      registers,
    }),
    deviceAck: new Histogram({
      name: 'pushline_device_ack_seconds',
      help: 'Time from emitting a message to the device ack (delivered or rejected).',
      labelNames: ['outcome'],
      buckets: LATENCY_BUCKETS_S,
      registers,
    }),
    registryOps: new Counter({
      name: 'pushline_registry_ops_total',
      help: 'Registry operations, by operation and result.',
      labelNames: ['op', 'result'],
      registers,
    }),
    connectionEvents: new Counter({
      name: 'pushline_connection_events_total',
      help: 'Connection events handed to Kafka (sent) or given up on (dropped).',
      labelNames: ['result'],
      registers,
    }),
    d2d: new Counter({
      name: 'pushline_d2d_total',
      help: 'Device-to-device sends, by outcome (delivery outcome or error code).',
      labelNames: ['outcome'],
      registers,
    }),
    broadcasts: new Counter({
      name: 'pushline_broadcasts_total',
      help: 'Topic broadcasts started on this server, by result.',
      labelNames: ['result'],
      registers,
    }),
    subscriptions: new Counter({
      name: 'pushline_subscriptions_total',
      help: 'Topic subscribe/unsubscribe requests, by result.',
      labelNames: ['op', 'result'],
      registers,
    }),
    requestsRefused: new Counter({
      name: 'pushline_device_requests_refused_total',
      help: 'Device requests refused before their handler: no_ack (not executed), unknown_event, invalid_request, too_deep, rate_limited.',
      labelNames: ['event', 'reason'],
      registers,
    }),
    tokenLifecycle: new Counter({
      name: 'pushline_device_tokens_total',
      help: 'Token events of live connections: expiring (hint sent), refreshed, refresh_rejected, expired (connection closed).',
      labelNames: ['event'],
      registers,
    }),
    handshakesRefused: new Counter({
      name: 'pushline_handshakes_refused_total',
      help: 'Transports refused or closed before authentication: per_address (too many pending from one address, HTTP 400), no_connect (no CONNECT packet in time), eio3 (HTTP 400 before the upgrade).',
      labelNames: ['reason'],
      registers,
    }),
    reconnectHints: new Counter({
      name: 'pushline_reconnect_hints_total',
      help: 'Reconnect hints sent to devices, by reason.',
      labelNames: ['reason'],
      registers,
    }),
    loopFailures: new Counter({
      name: 'pushline_loop_failures_total',
      help: 'Failed iterations of background loops (registry refresh, load report, inbox drain, ...).',
      labelNames: ['loop'],
      registers,
    }),
    loopRuns: new Counter({
      name: 'pushline_loop_runs_total',
      help: 'Completed iterations of background loops, to see that they run at all.',
      labelNames: ['loop'],
      registers,
    }),
    internalRequests: new Counter({
      name: 'pushline_internal_requests_total',
      help: 'Requests to the internal delivery API, by route and status.',
      labelNames: ['route', 'status'],
      registers,
    }),
  };
}

/** Runs a registry call and counts it; the error is rethrown for the caller to handle. */
export async function countedRegistryOp<T>(
  metrics: ConnectionServerMetrics,
  op: string,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    const result = await fn();
    metrics.registryOps.inc({ op, result: 'ok' });
    return result;
  } catch (err) {
    metrics.registryOps.inc({ op, result: 'error' });
    throw err;
  }
}
