import type { DeviceLocator, MessageRouter, OutgoingMessage } from '@pushline/delivery';
import type { RedisOfflineStore } from '@pushline/offline-store';
import type {
  DeliverResult,
  DeliveryEvent,
  DeliveryOutcome,
  PushRequest,
  StoredMessage,
} from '@pushline/protocol';
import { injectTraceHeaders } from '@pushline/telemetry';
import type { TargetResolver } from './target-resolver.ts';

export interface PushRequestHandlerOptions {
  readonly resolver: TargetResolver;
  readonly router: MessageRouter;
  readonly locator: DeviceLocator;
  readonly store: RedisOfflineStore;
  /** Time a device has to ack. */
  readonly deliveryTimeoutMs: number;
}

/**
 * The devices that may have stored messages, looked up once for a whole batch
 * (`RedisOfflineStore.withPending`). A device not in it had none at the lookup, so the per-request
 * check is skipped; the handler adds every device it stores for, so a later request of the batch
 * for that device still drains first.
 */
export interface StoredHint {
  readonly mayHavePending: Set<string>;
}

/**
 * What the handler may note about its attempt in the request ledger (requests with a ttl only):
 * that it is sending the request, and whether an earlier attempt that never recorded an outcome
 * (its processor died) had sent it.
 */
export interface AttemptLedger {
  markSent(): Promise<void>;
  sentBefore(): Promise<boolean>;
}

/** Outcomes after which a message with a ttl is kept for the device instead of being final. */
const STORABLE = new Set<DeliveryOutcome>(['not_connected', 'timeout']);

/**
 * Turns one push request into deliveries and the delivery events that record them: one terminal
 * event per device, or a non-terminal `stored` event when the device is unreachable and the
 * request has a ttl (the offline store records the terminal one later). Events are returned, not
 * sent: the caller writes them to Kafka before it marks the request done.
 */
export class PushRequestHandler {
  readonly #options: PushRequestHandlerOptions;

  constructor(options: PushRequestHandlerOptions) {
    this.#options = options;
  }

  async handle(req: PushRequest, hint?: StoredHint, attempt?: AttemptLedger): Promise<DeliveryEvent[]> {
    const ttlMs = (req.ttlSeconds ?? 0) * 1000;
    let expiresAt = ttlMs > 0 ? req.createdAt + ttlMs : undefined;
    const deviceId = req.target.type === 'device' ? req.target.id : undefined;
    let retakenLate = false;
    if (expiresAt !== undefined && expiresAt <= Date.now()) {
      if (!(await attempt?.sentBefore())) {
        // It waited in Kafka longer than it may live: never delivered late.
        return [this.#event(req, { deviceId, outcome: 'expired', attempts: 1, reason: 'ttl_elapsed' })];
      }
      // A processor sent it within its ttl and died before recording the outcome. The attempt is
      // repeated, so a device that acked it is reported delivered (its connection answers
      // `duplicate` without sending it again); a device it cannot reach now gets `expired`.
      retakenLate = true;
      expiresAt = undefined;
    } else if (expiresAt !== undefined) {
      await attempt?.markSent();
    }
    const mayHavePending = deviceId !== undefined && (hint?.mayHavePending.has(deviceId) ?? true);
    if (deviceId !== undefined && mayHavePending && (await this.#hasStoredAndIsConnected(deviceId))) {
      // Stored messages go first, so the device sees its messages in order. The drain records
      // their outcomes itself; if the device is gone it stops, and this request is stored behind.
      await this.#options.store.drain(deviceId, (msg) => this.#deliverStored(deviceId, msg));
    }

    const events = await this.#deliver(req, deviceId, expiresAt, hint);
    if (!retakenLate) return events;
    return events.map((ev) =>
      ev.outcome === 'not_connected' || ev.outcome === 'timeout'
        ? { ...ev, outcome: 'expired', reason: 'ttl_elapsed' }
        : ev,
    );
  }

  async #deliver(
    req: PushRequest,
    deviceId: string | undefined,
    expiresAt: number | undefined,
    hint: StoredHint | undefined,
  ): Promise<DeliveryEvent[]> {
    const startedAt = Date.now();
    const resolution = await this.#options.resolver.deliver(req.target, this.#outgoing(req));
    switch (resolution.kind) {
      case 'topic':
        return [
          this.#event(req, {
            outcome: 'delivered',
            attempts: 1,
            deliveredCount: resolution.result.delivered,
          }),
        ];
      case 'failed':
        if (deviceId !== undefined) {
          return [
            await this.#settle(
              req,
              deviceId,
              resolution.outcome,
              1,
              resolution.reason,
              expiresAt,
              hint,
              startedAt,
            ),
          ];
        }
        return [this.#event(req, { outcome: resolution.outcome, attempts: 1, reason: resolution.reason })];
      case 'devices': {
        if (resolution.results.length === 0) {
          // A user with no device connected: nothing to deliver to, nor to store for (the
          // registry only knows connected devices). One event says so.
          return [
            this.#event(req, { outcome: 'not_connected', attempts: 1, reason: 'no_connected_devices' }),
          ];
        }
        return Promise.all(
          resolution.results.map((r) =>
            this.#settle(req, r.deviceId, r.outcome, r.attempts, r.reason, expiresAt, hint, startedAt),
          ),
        );
      }
    }
  }

  /** An offline device's stored messages wait for its reconnect: no doomed delivery per request. */
  async #hasStoredAndIsConnected(deviceId: string): Promise<boolean> {
    if ((await this.#options.store.pending(deviceId)) === 0) return false;
    return (await this.#options.locator.lookup(deviceId)).record !== null;
  }

  async #settle(
    req: PushRequest,
    deviceId: string,
    outcome: DeliverResult['outcome'],
    attempts: number,
    reason: string | undefined,
    expiresAt: number | undefined,
    hint: StoredHint | undefined,
    startedAt: number,
  ): Promise<DeliveryEvent> {
    if (expiresAt === undefined || !STORABLE.has(outcome)) {
      return this.#event(req, { deviceId, outcome, attempts, reason });
    }
    const trace = injectTraceHeaders();
    const msg: StoredMessage = {
      v: 1,
      requestId: req.id,
      // Stored messages are deduplicated per origin, as the ledger deduplicates requests.
      ...(req.origin === undefined ? {} : { origin: req.origin }),
      target: req.target,
      payload: req.payload,
      createdAt: req.createdAt,
      expiresAt,
      attempts,
      ...trace,
    };
    hint?.mayHavePending.add(deviceId);
    const stored = await this.#options.store.store(deviceId, msg);
    if (!stored.stored) {
      // The origin's quota of stored messages is spent: the live outcome is final.
      return this.#event(req, { deviceId, outcome, attempts, reason: stored.refused });
    }
    await this.#drainIfReconnected(deviceId, outcome, startedAt);
    return this.#event(req, { deviceId, outcome, attempts, reason, terminal: false, stored: true });
  }

  /**
   * A device that connected while this request was being tried drained its inbox on connect, maybe
   * just before the store above; without a drain here the message would wait for the device's next
   * request or connect, or expire. Typical for phones: the attempt went to the old connection, which
   * the reconnect closed as replaced, or timed out on one that died silently. A timeout on a connection that
   * is still the device's current one is left for later, so a slow device is not retried at once.
   * The registry is read afresh: the cache learns of connects through connection events, which
   * linger.
   */
  async #drainIfReconnected(deviceId: string, outcome: DeliveryOutcome, startedAt: number): Promise<void> {
    this.#options.locator.invalidate(deviceId);
    const { record } = await this.#options.locator.lookup(deviceId);
    if (!record) return;
    if (outcome === 'timeout' && record.connectedAt < startedAt) return;
    // A drain already running (the connect's own) sees the message or leaves the lock free for this one.
    await this.#options.store.drain(deviceId, (m) => this.#deliverStored(deviceId, m), {
      waitForLock: false,
    });
  }

  #outgoing(req: PushRequest): OutgoingMessage {
    return {
      messageId: req.id,
      payload: req.payload,
      source: 'async',
      ...(req.origin === undefined ? {} : { origin: req.origin }),
      timeoutMs: this.#options.deliveryTimeoutMs,
    };
  }

  #deliverStored(deviceId: string, msg: StoredMessage): Promise<DeliverResult> {
    const out: OutgoingMessage = {
      messageId: msg.requestId,
      payload: msg.payload,
      source: 'offline',
      ...(msg.origin === undefined ? {} : { origin: msg.origin }),
      timeoutMs: this.#options.deliveryTimeoutMs,
    };
    if (msg.traceparent) {
      out.trace = { traceparent: msg.traceparent, ...(msg.tracestate ? { tracestate: msg.tracestate } : {}) };
    }
    return this.#options.router.toDevice(deviceId, out);
  }

  #event(
    req: PushRequest,
    fields: {
      deviceId?: string | undefined;
      outcome: DeliveryOutcome;
      attempts: number;
      reason?: string | undefined;
      terminal?: boolean;
      stored?: boolean;
      deliveredCount?: number;
    },
  ): DeliveryEvent {
    const now = Date.now();
    return {
      v: 1,
      requestId: req.id,
      target: req.target,
      ...(fields.deviceId === undefined ? {} : { deviceId: fields.deviceId }),
      outcome: fields.outcome,
      terminal: fields.terminal ?? true,
      ...(fields.stored ? { stored: true } : {}),
      source: 'async',
      ...(fields.deliveredCount === undefined ? {} : { deliveredCount: fields.deliveredCount }),
      ...(fields.reason === undefined ? {} : { reason: fields.reason }),
      latencyMs: Math.max(0, now - req.createdAt),
      attempts: Math.max(1, fields.attempts),
      at: now,
    };
  }
}
