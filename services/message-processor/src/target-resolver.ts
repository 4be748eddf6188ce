import {
  DeliveryTransportError,
  InternalAuthError,
  PartialDeliveryError,
  type MessageRouter,
  type OutgoingMessage,
  type RoutedResult,
} from '@pushline/delivery';
import type { BroadcastResult, PushTarget } from '@pushline/protocol';
import { backoffMs } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';

export type Resolution =
  /** One result per device reached (device target: exactly one; user target: one per connected device). */
  | { readonly kind: 'devices'; readonly results: readonly RoutedResult[] }
  | { readonly kind: 'topic'; readonly result: BroadcastResult }
  /**
   * The connection servers could not be asked, or gave no usable answer (after retries); `reason`
   * says why. `outcome` is `not_connected` only when no request ever left (the server could not be
   * reached); otherwise the server may have acted on it, so it is `timeout` ("may have been
   * delivered"), never a claim that the device did not get it.
   */
  | { readonly kind: 'failed'; readonly outcome: 'not_connected' | 'timeout'; readonly reason: string };

export interface TargetResolverOptions {
  readonly router: MessageRouter;
  readonly logger: Logger;
  /**
   * Tries per request when a connection server answers outside the contract (5xx, bad body,
   * broken socket), for device and user targets. Device outcomes (not_connected, timeout, ...)
   * are never retried here, nor are topic broadcasts (the router owns their retry). Default 3.
   */
  readonly maxAttempts?: number;
}

/**
 * Resolves a push target to deliveries through the shared `MessageRouter`: a device through the
 * cached locator, a user to every device connected now, a topic as one broadcast that reaches its
 * subscribers on every server. Transport failures are retried a few times and then reported as
 * `failed` (per device for a user), so one broken server cannot block a key; registry (Redis)
 * errors are thrown, since nothing can be delivered without it and the request is retried once
 * Redis answers again.
 */
export class TargetResolver {
  readonly #router: MessageRouter;
  readonly #log: Logger;
  readonly #maxAttempts: number;

  constructor(options: TargetResolverOptions) {
    this.#router = options.router;
    this.#log = options.logger;
    this.#maxAttempts = options.maxAttempts ?? 3;
  }

  async deliver(target: PushTarget, msg: OutgoingMessage): Promise<Resolution> {
    switch (target.type) {
      case 'device':
        return this.#withRetries(target, async () => ({
          kind: 'devices',
          results: [await this.#router.toDevice(target.id, msg)],
        }));
      case 'user':
        return { kind: 'devices', results: await this.#toUser(target, msg) };
      case 'topic':
        // Not tried again here: the router already tries a second server when the first could not
        // be reached, and subscribers do not deduplicate a broadcast that may have left. Retrying
        // here too multiplied one unreachable server into maxAttempts × 2 broadcasts.
        return this.#withRetries(
          target,
          async () => ({ kind: 'topic', result: await this.#router.toTopic(target.id, msg) }),
          1,
          () => false,
        );
    }
  }

  /**
   * One result per device the user has connected: the fan-out's own results, and for each device
   * whose delivery threw a transport error, its own retries (`toDevice`, not the whole fan-out
   * again), then a `not_connected` result with reason `delivery_failed:<failure>` when they are
   * spent. So every device gets an outcome (and, with a ttl, its message is stored). Any other
   * error (the registry) is thrown: the request is retried whole and marked done only then.
   */
  async #toUser(target: PushTarget, msg: OutgoingMessage): Promise<RoutedResult[]> {
    let fanOut: PartialDeliveryError;
    try {
      return await this.#router.toUser(target.id, msg);
    } catch (err) {
      if (!(err instanceof PartialDeliveryError)) throw err;
      fanOut = err;
    }
    const results = [...fanOut.results];
    const retried = await Promise.all(
      fanOut.failedDeviceIds.map(async (deviceId, i) => {
        const error = fanOut.errors[i];
        if (!isTransportFailure(error)) throw error;
        this.#logFailure(error, target, 1, deviceId);
        // Attempts 2 and on, of this device alone.
        const resolution = await this.#withRetries(
          { type: 'device', id: deviceId },
          async () => ({ kind: 'devices', results: [await this.#router.toDevice(deviceId, msg)] }),
          2,
        );
        if (resolution.kind === 'devices' && resolution.results[0]) return resolution.results[0];
        const failed: RoutedResult = {
          deviceId,
          outcome: resolution.kind === 'failed' ? resolution.outcome : 'timeout',
          reason: resolution.kind === 'failed' ? resolution.reason : 'delivery_failed',
          latencyMs: 0,
          attempts: Math.max(1, this.#maxAttempts),
        };
        return failed;
      }),
    );
    return [...results, ...retried];
  }

  #logFailure(err: unknown, target: PushTarget, attempt: number, deviceId?: string): void {
    const fields = { err, target, attempt, ...(deviceId === undefined ? {} : { deviceId }) };
    if (isAuthFailure(err)) {
      // Not a device outcome: the services disagree on the internal token (deployment error).
      this.#log.error(fields, 'a connection server rejected the internal token');
    } else {
      this.#log.warn(fields, 'delivery through a connection server failed');
    }
  }

  /**
   * Tries `attempt` until it gives an answer, up to `maxAttempts` in all. A delivery to one device
   * may be tried again whatever failed: its connection drops a message id it already has. A
   * failure `retryable` refuses ends the tries at once.
   */
  async #withRetries(
    target: PushTarget,
    attempt: () => Promise<Resolution>,
    firstAttempt = 1,
    retryable: (err: unknown) => boolean = () => true,
  ): Promise<Resolution> {
    for (let n = firstAttempt; ; n++) {
      if (n > 1) await new Promise((resolve) => setTimeout(resolve, backoffMs(n - 1, 100, 2_000)));
      try {
        return await attempt();
      } catch (err) {
        if (!isTransportFailure(err)) throw err;
        this.#logFailure(err, target, n);
        if (n >= this.#maxAttempts || !retryable(err)) {
          return {
            kind: 'failed',
            outcome: neverSent(err) ? 'not_connected' : 'timeout',
            reason: failureReason(err),
          };
        }
      }
    }
  }
}

/** Whether every failed request of `err` failed before it left (the server could not be reached). */
function neverSent(err: unknown): boolean {
  const errors = err instanceof PartialDeliveryError ? err.errors : [err];
  return errors.every((e) => e instanceof DeliveryTransportError && e.failure === 'server_unreachable');
}

function isTransportFailure(err: unknown): boolean {
  if (err instanceof DeliveryTransportError) return true;
  return err instanceof PartialDeliveryError && err.errors.every((e) => e instanceof DeliveryTransportError);
}

function isAuthFailure(err: unknown): boolean {
  if (err instanceof InternalAuthError) return true;
  return err instanceof PartialDeliveryError && err.errors.some((e) => e instanceof InternalAuthError);
}

function failureReason(err: unknown): string {
  const first = err instanceof PartialDeliveryError ? err.errors[0] : err;
  return first instanceof DeliveryTransportError ? `delivery_failed:${first.failure}` : 'delivery_failed';
}
