import {
  AuthErrorCode,
  DEVICE_REQUEST_EVENTS,
  DeliverySource,
  DeviceErrorCode,
  DisconnectReason,
  ReconnectReason,
} from '@pushline/protocol';
import {
  Counter,
  Gauge,
  LATENCY_BUCKETS_S,
  stageCounter,
  stageHistogram,
  type Histogram,
  type Registry,
} from '@pushline/telemetry';

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
  /** Registry entries written again after Redis lost them (RegistryRestorer). */
  readonly registryRestored: Counter<never>;
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
}

/**
 * The closed sets of every label value, so each series exists from boot at 0 (`stageCounter`):
 * `rate()` sees the first event, and sums across stages never miss a series. A value used in code
 * but missing here still works; its series then appears only on first use.
 */
const CONNECTION_SERVER_LABELS = {
  deliveryOutcomes: ['delivered', 'not_connected', 'timeout', 'rejected'],
  ackOutcomes: ['delivered', 'rejected'],
  registryOps: [
    'register',
    'unregister',
    'refresh',
    'clear_server',
    'report_load',
    'remove_load',
    'restore',
    'mark',
    'check_mark',
  ],
  /** Background loops that count their completed iterations (`pushline_loop_runs_total`). */
  loopsWithRuns: ['registry_refresh', 'load_report', 'token_expiry', 'registry_check'],
  loops: [
    'registry_refresh',
    'load_report',
    'liveness_sweep',
    'inbox_drain',
    'replaced_notice',
    'token_expiry',
    'registry_check',
    'socketio_adapter',
  ],
  /** Device request events, plus `unknown` for any other event name. */
  requestEvents: [...DEVICE_REQUEST_EVENTS, 'unknown'],
  requestRefusals: ['no_ack', 'unknown_event', 'invalid_request', 'too_deep', 'rate_limited'],
  broadcastResults: ['complete', 'partial_timeout'],
} as const;

export function createMetrics(registry: Registry, connectionCount: () => number): ConnectionServerMetrics {
  const registers = [registry];
  const L = CONNECTION_SERVER_LABELS;
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
    disconnects: stageCounter({
      name: 'pushline_disconnects_total',
      help: 'Device connections ended, by reason.',
      labels: { reason: DisconnectReason.options },
      registry,
    }),
    authFailures: stageCounter({
      name: 'pushline_auth_failures_total',
      help: 'Refused device handshakes, by reason code.',
      labels: { code: AuthErrorCode.options },
      registry,
    }),
    handshakesBusy: new Counter({
      name: 'pushline_handshakes_busy_total',
      help: 'Device handshakes refused at the upgrade because too many were already in flight.',
      registers,
    }),
    deliveries: stageCounter({
      name: 'pushline_server_deliveries_total',
      help: 'Messages this server was asked to hand to a local device, by source and outcome.',
      labels: { source: DeliverySource.options, outcome: L.deliveryOutcomes },
      registry,
    }),
    deviceAck: stageHistogram({
      name: 'pushline_device_ack_seconds',
      help: 'Time from emitting a message to the device ack (delivered or rejected).',
      labels: { outcome: L.ackOutcomes },
      buckets: LATENCY_BUCKETS_S,
      registry,
    }),
    registryOps: stageCounter({
      name: 'pushline_registry_ops_total',
      help: 'Registry operations, by operation and result.',
      labels: { op: L.registryOps, result: ['ok', 'error'] },
      registry,
    }),
    registryRestored: new Counter({
      name: 'pushline_registry_restored_total',
      help: 'Registry entries of live connections written again after Redis lost them (restart without persistence, flush).',
      registers,
    }),
    connectionEvents: stageCounter({
      name: 'pushline_connection_events_total',
      help: 'Connection events handed to Kafka (sent) or given up on (dropped).',
      labels: { result: ['sent', 'dropped'] },
      registry,
    }),
    d2d: stageCounter({
      name: 'pushline_d2d_total',
      help: 'Device-to-device sends, by outcome (delivery outcome or error code).',
      labels: { outcome: [...L.deliveryOutcomes, ...DeviceErrorCode.options] },
      registry,
    }),
    broadcasts: stageCounter({
      name: 'pushline_broadcasts_total',
      help: 'Topic broadcasts started on this server, by result.',
      labels: { result: L.broadcastResults },
      registry,
    }),
    subscriptions: stageCounter({
      name: 'pushline_subscriptions_total',
      help: 'Topic subscribe/unsubscribe requests, by result.',
      labels: { op: ['subscribe', 'unsubscribe'], result: ['ok', ...DeviceErrorCode.options] },
      registry,
    }),
    requestsRefused: stageCounter({
      name: 'pushline_device_requests_refused_total',
      help: 'Device requests refused before their handler: no_ack (not executed), unknown_event, invalid_request, too_deep, rate_limited.',
      labels: { event: L.requestEvents, reason: L.requestRefusals },
      registry,
    }),
    tokenLifecycle: stageCounter({
      name: 'pushline_device_tokens_total',
      help: 'Token events of live connections: expiring (hint sent), refreshed, refresh_rejected, expired (connection closed).',
      labels: { event: ['expiring', 'refreshed', 'refresh_rejected', 'expired'] },
      registry,
    }),
    handshakesRefused: stageCounter({
      name: 'pushline_handshakes_refused_total',
      help: 'Transports refused or closed before authentication: per_address (too many pending from one address, HTTP 400), no_connect (no CONNECT packet in time), eio3 (HTTP 400 before the upgrade).',
      labels: { reason: ['per_address', 'no_connect', 'eio3'] },
      registry,
    }),
    reconnectHints: stageCounter({
      name: 'pushline_reconnect_hints_total',
      help: 'Reconnect hints sent to devices, by reason.',
      labels: { reason: ReconnectReason.options },
      registry,
    }),
    loopFailures: stageCounter({
      name: 'pushline_loop_failures_total',
      help: 'Failed iterations of background loops (registry refresh, load report, inbox drain, ...).',
      labels: { loop: L.loops },
      registry,
    }),
    loopRuns: stageCounter({
      name: 'pushline_loop_runs_total',
      help: 'Completed iterations of background loops, to see that they run at all.',
      labels: { loop: L.loopsWithRuns },
      registry,
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
