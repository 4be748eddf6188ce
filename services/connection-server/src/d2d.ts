import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { DeviceLocator, MessageRouter } from '@pushline/delivery';
import { payloadBytes, SendRequest, type DeviceErrorCode, type SendAck } from '@pushline/protocol';
import { RegistryIncompleteError, type DeviceRecord } from '@pushline/registry';
import { SpanKind, withSpan, type Logger, type Tracer } from '@pushline/telemetry';
import type { DeviceConnection } from './connection.ts';
import type { ConnectionServerMetrics } from './metrics.ts';
import { ConnectionRateLimit } from './rate-limit.ts';
import { errorAck } from './subscriptions.ts';

/** Which device may message which. */
export type D2dPolicy = 'same-user' | 'same-tenant' | 'any' | 'none';

/** The user and tenant of a sender or a target, as far as they are known. */
export interface D2dParty {
  readonly userId?: string | undefined;
  readonly tenantId?: string | undefined;
}

/** Whether `policy` lets `sender` message `target`; an unknown user or tenant never matches. */
export function d2dAllowed(policy: D2dPolicy, sender: D2dParty, target: D2dParty): boolean {
  switch (policy) {
    case 'any':
      return true;
    case 'none':
      return false;
    case 'same-user':
      return sender.userId !== undefined && sender.userId === target.userId;
    case 'same-tenant':
      return sender.tenantId !== undefined && sender.tenantId === target.tenantId;
  }
}

export interface DeviceToDeviceOptions {
  readonly policy: D2dPolicy;
  readonly router: MessageRouter;
  readonly locator: DeviceLocator;
  readonly ratePerS: number;
  readonly burst: number;
  readonly maxPayloadBytes: number;
  readonly defaultTimeoutMs: number;
  readonly metrics: ConnectionServerMetrics;
  readonly tracer: Tracer;
  readonly logger: Logger;
}

/**
 * Device-to-device `send`: validate, rate-limit per connection, check the policy against the
 * target's registry record, then route like a direct push (the router short-circuits devices on
 * this server) and ack the sender with the target's outcome.
 *
 * Under the same-user and same-tenant policies a target outside the sender's user/tenant is
 * answered exactly like an offline one (`not_connected`), so a device cannot probe which
 * device ids exist or are online elsewhere.
 */
export class DeviceToDevice {
  readonly #options: DeviceToDeviceOptions;
  readonly #rate: ConnectionRateLimit;

  constructor(options: DeviceToDeviceOptions) {
    this.#options = options;
    this.#rate = new ConnectionRateLimit(options.ratePerS, options.burst);
  }

  async send(conn: DeviceConnection, raw: unknown): Promise<SendAck> {
    const ack = await withSpan(
      this.#options.tracer,
      'd2d send',
      { kind: SpanKind.SERVER, attributes: { 'pushline.source': 'd2d' } },
      async (span) => {
        const result = await this.#send(conn, raw);
        span.setAttribute('pushline.outcome', result.ok ? result.outcome : result.error.code);
        return result;
      },
    );
    this.#options.metrics.d2d.inc({ outcome: ack.ok ? ack.outcome : ack.error.code });
    return ack;
  }

  async #send(conn: DeviceConnection, raw: unknown): Promise<SendAck> {
    const parsed = SendRequest.safeParse(raw);
    if (!parsed.success) {
      return errorAck('invalid_request', parsed.error.issues[0]?.message ?? 'invalid send request');
    }
    const req = parsed.data;
    if (payloadBytes(req.payload) > this.#options.maxPayloadBytes) {
      return errorAck('payload_too_large', `payload exceeds ${this.#options.maxPayloadBytes} bytes`);
    }
    if (!this.#rate.take(conn))
      return errorAck('rate_limited', `at most ${this.#options.ratePerS} messages per second`);
    if (this.#options.policy === 'none')
      return errorAck('forbidden', 'device-to-device messages are disabled');

    const id = req.id ?? randomUUID();
    const started = performance.now();
    try {
      if (this.#options.policy !== 'any' && !(await this.#allowed(conn, req.to))) {
        return { ok: true, id, outcome: 'not_connected', latencyMs: performance.now() - started };
      }
      const result = await this.#options.router.toDevice(req.to, {
        messageId: id,
        payload: req.payload,
        source: 'd2d',
        from: conn.deviceId,
        fromUser: conn.userId,
        ...(conn.tenantId !== undefined ? { fromTenant: conn.tenantId } : {}),
        timeoutMs: req.timeoutMs ?? this.#options.defaultTimeoutMs,
      });
      return { ok: true, id, outcome: result.outcome, latencyMs: result.latencyMs };
    } catch (err) {
      this.#options.logger.warn({ err, from: conn.deviceId, to: req.to }, 'device-to-device send failed');
      const code: DeviceErrorCode = 'internal';
      return errorAck(
        code,
        err instanceof RegistryIncompleteError
          ? 'the device registry is being restored (Redis lost it or was unreachable); retry in a second'
          : 'could not route the message; retry later',
      );
    }
  }

  /**
   * Same user / same tenant, read through the locator cache (re-read once if it says no). A quick
   * refusal before any routing only: the cache may be stale, so the server holding the target checks
   * again against the live connection (delivery.ts), and that check is the one that decides.
   */
  async #allowed(conn: DeviceConnection, to: string): Promise<boolean> {
    const first = await this.#options.locator.lookup(to);
    // Nowhere to be found: the router says not_connected, once the registry is known to be whole
    // (it may be being restored after Redis lost it).
    if (first.record === null) return true;
    if (this.#matches(conn, first.record)) return true;
    if (!first.cached) return false;
    this.#options.locator.invalidate(to);
    return this.#matches(conn, (await this.#options.locator.lookup(to)).record);
  }

  #matches(conn: DeviceConnection, record: DeviceRecord | null): boolean {
    return record !== null && d2dAllowed(this.#options.policy, conn, record);
  }
}
