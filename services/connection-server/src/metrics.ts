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
  /** Registry entries written again after Redis lost them (RegistryRestorer). */
  readonly registryRestored: Counter<never>;
  readonly connectionEvents: Counter<'result'>;
  readonly d2d: Counter<'outcome'>;
  readonly broadcasts: Counter<'result'>;
  readonly subscriptions: Counter<'op' | 'result'>;
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
    registryRestored: new Counter({
      name: 'pushline_registry_restored_total',
      help: 'Registry entries of live connections written again after Redis lost them (restart without persistence, flush).',
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
