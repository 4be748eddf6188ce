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
  /** The connection servers could not be asked (after retries); `reason` says why. */
  | { readonly kind: 'failed'; readonly reason: string };

export interface TargetResolverOptions {
  readonly router: MessageRouter;
  readonly logger: Logger;
  /**
   * Tries per request when a connection server answers outside the contract (5xx, bad body,
   * broken socket). Device outcomes (not_connected, timeout, ...) are never retried here.
   * Default 3.
   */
  readonly maxAttempts?: number;
}

/**
 * Resolves a push target to deliveries through the shared `MessageRouter`: a device through the
 * cached locator, a user to every device connected now, a topic as one broadcast that reaches its
 * subscribers on every server. Transport failures are retried a few times and then reported as
 * `failed`, so one broken server cannot block a partition; registry (Redis) errors are thrown,
 * since nothing can be delivered without it and the batch is retried after a backoff.
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
        return this.#withRetries(target, async () => ({
          kind: 'devices',
          results: await this.#router.toUser(target.id, msg),
        }));
      case 'topic':
        return this.#withRetries(target, async () => ({
          kind: 'topic',
          result: await this.#router.toTopic(target.id, msg),
        }));
    }
  }

  async #withRetries(target: PushTarget, attempt: () => Promise<Resolution>): Promise<Resolution> {
    let partial: readonly RoutedResult[] = [];
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (!isTransportFailure(err)) throw err;
        if (err instanceof PartialDeliveryError) partial = err.results;
        if (isAuthFailure(err)) {
          // Not a device outcome: the services disagree on the internal token (deployment error).
          this.#log.error({ err, target, attempt: n }, 'a connection server rejected the internal token');
        } else {
          this.#log.warn({ err, target, attempt: n }, 'delivery through a connection server failed');
        }
        if (n >= this.#maxAttempts) {
          // A fan-out whose some deliveries failed still reports the devices that did answer.
          if (partial.length > 0) return { kind: 'devices', results: partial };
          return { kind: 'failed', reason: failureReason(err) };
        }
        await new Promise((resolve) => setTimeout(resolve, backoffMs(n, 100, 2_000)));
      }
    }
  }
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
