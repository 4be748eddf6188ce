import { BufferedPublisher, type Producer } from '@pushline/kafka';
import type { ConnectionEvent, DisconnectReason } from '@pushline/protocol';
import { injectTraceHeaders, type Logger } from '@pushline/telemetry';
import type { DeviceConnection } from './connection.ts';
import type { ConnectionServerMetrics } from './metrics.ts';

/**
 * Publishes `connected` / `disconnected` events (ConnectionEvent v1) to
 * `<prefix>connection-events`, keyed by device id so one device's events stay in order.
 * Publishing never blocks the socket path: records are batched in the background, retried,
 * and counted as sent or dropped.
 */
export class ConnectionEventPublisher {
  readonly #publisher: BufferedPublisher;
  readonly #serverId: string;

  constructor(options: {
    producer: Producer;
    topic: string;
    serverId: string;
    logger: Logger;
    metrics: ConnectionServerMetrics;
    /** Longest an event waits before its batch is sent. Default 500 ms. */
    lingerMs?: number;
    /** Events per produce request. Default 2000. */
    maxBatch?: number;
  }) {
    const { metrics } = options;
    this.#serverId = options.serverId;
    this.#publisher = new BufferedPublisher({
      producer: options.producer,
      topic: options.topic,
      logger: options.logger.child({ component: 'connection-events' }),
      // The broker pays per produce request, not per record (docs/performance.md, "Connection
      // events linger 500 ms"). Consumers tolerate the delay: caches fed by these events heal on
      // a stale entry (a not_connected answer and a fresh lookup).
      lingerMs: options.lingerMs ?? 500,
      maxBatch: options.maxBatch ?? 2000,
      onSent: (n) => metrics.connectionEvents.inc({ result: 'sent' }, n),
      onDrop: (n) => metrics.connectionEvents.inc({ result: 'dropped' }, n),
    });
  }

  connected(conn: DeviceConnection): void {
    this.#publish({
      v: 1,
      type: 'connected',
      deviceId: conn.deviceId,
      userId: conn.userId,
      ...(conn.tenantId !== undefined ? { tenantId: conn.tenantId } : {}),
      serverId: this.#serverId,
      connectionId: conn.connectionId,
      at: conn.connectedAt,
    });
  }

  disconnected(conn: DeviceConnection, reason: DisconnectReason, at = Date.now()): void {
    this.#publish({
      v: 1,
      type: 'disconnected',
      deviceId: conn.deviceId,
      userId: conn.userId,
      ...(conn.tenantId !== undefined ? { tenantId: conn.tenantId } : {}),
      serverId: this.#serverId,
      connectionId: conn.connectionId,
      at,
      reason,
      durationMs: Math.max(0, at - conn.connectedAt),
    });
  }

  /** Resolves when everything published so far was sent or dropped. */
  flush(): Promise<void> {
    return this.#publisher.flush();
  }

  close(): Promise<void> {
    return this.#publisher.close();
  }

  #publish(event: ConnectionEvent): void {
    const headers = injectTraceHeaders();
    this.#publisher.publish({
      key: event.deviceId,
      value: JSON.stringify(event),
      ...(headers.traceparent ? { headers } : {}),
    });
  }
}
