import {
  checkJsonValue,
  DEVICE_REQUEST_EVENTS,
  DeviceEvents,
  type DeviceErrorAck,
  type DeviceRequestEvent,
} from '@pushline/protocol';
import type { Logger } from '@pushline/telemetry';
import type { DeviceConnection } from './connection.ts';
import type { ConnectionServerMetrics } from './metrics.ts';
import { ConnectionRateLimit } from './rate-limit.ts';
import { errorAck } from './subscriptions.ts';

/** Answers one request body of a connection; its promise resolves with the ack. */
type RequestHandler = (conn: DeviceConnection, body: unknown) => Promise<unknown>;

export interface DeviceRequestsOptions {
  /** The handler of every request event. */
  readonly handlers: Readonly<Record<DeviceRequestEvent, RequestHandler>>;
  /** PUSHLINE_MAX_JSON_DEPTH: the deepest a request's fields (a d2d payload) may nest. */
  readonly maxJsonDepth: number;
  /** PUSHLINE_DEVICE_REQUEST_RATE_PER_S / _BURST: subscribe, unsubscribe and refresh_token. */
  readonly ratePerS: number;
  readonly burst: number;
  readonly metrics: ConnectionServerMetrics;
  readonly logger: Logger;
}

const REQUEST_EVENTS: ReadonlySet<string> = new Set(DEVICE_REQUEST_EVENTS);

/** Requests that draw from the control rate limit; `send` has its own (d2d.ts), taken after validation. */
const RATE_LIMITED: ReadonlySet<string> = new Set([
  DeviceEvents.subscribe,
  DeviceEvents.unsubscribe,
  DeviceEvents.refreshToken,
]);

/**
 * The front door of every device → server event. Each one sent with an ack callback gets exactly
 * one answer through it: an unknown event, a request that is not one JSON object argument, one
 * nested deeper than the configured bound, or one over the rate limit gets an error ack before
 * any handler (or any recursive walk) sees it; a handler that throws answers `internal`. An event
 * without an ack callback cannot be answered, so it is not executed (only counted).
 */
export class DeviceRequests {
  readonly #options: DeviceRequestsOptions;
  readonly #rate: ConnectionRateLimit;

  constructor(options: DeviceRequestsOptions) {
    this.#options = options;
    this.#rate = new ConnectionRateLimit(options.ratePerS, options.burst);
  }

  /** Handles one event as socket.io delivers it to an any-listener: the name, then its arguments. */
  handle(conn: DeviceConnection, event: unknown, args: readonly unknown[]): void {
    const known = typeof event === 'string' && REQUEST_EVENTS.has(event);
    const label = known ? event : 'unknown';
    const ack = args.at(-1);
    if (typeof ack !== 'function') {
      this.#options.metrics.requestsRefused.inc({ event: label, reason: 'no_ack' });
      return;
    }
    const answer = (value: unknown) => (ack as (value: unknown) => void)(value);
    const refuse = (reason: string, body: DeviceErrorAck) => {
      this.#options.metrics.requestsRefused.inc({ event: label, reason });
      answer(body);
    };
    if (!known) return refuse('unknown_event', errorAck('invalid_request', 'unknown event'));
    const bodies = args.length - 1;
    if (bodies !== 1) {
      return refuse(
        'invalid_request',
        errorAck(
          'invalid_request',
          `${event} takes one request object and an ack callback (got ${bodies} arguments)`,
        ),
      );
    }
    const body = args[0];
    // The request object itself is one level; its fields (a d2d payload) may nest the bound below it.
    const problem = checkJsonValue(body, this.#options.maxJsonDepth + 1);
    if (problem === 'too_deep') {
      return refuse(
        'too_deep',
        errorAck('invalid_request', `request nests deeper than ${this.#options.maxJsonDepth} levels`),
      );
    }
    if (problem) return refuse('invalid_request', errorAck('invalid_request', 'request is not JSON'));
    if (RATE_LIMITED.has(event) && !this.#rate.take(conn)) {
      return refuse(
        'rate_limited',
        errorAck(
          'rate_limited',
          `at most ${this.#options.ratePerS} subscribe/unsubscribe/refresh_token requests per second`,
        ),
      );
    }
    conn.touch();
    let pending: Promise<unknown>;
    try {
      pending = this.#options.handlers[event as DeviceRequestEvent](conn, body);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(answer, (err: unknown) => {
      this.#options.logger.error({ err, event, deviceId: conn.deviceId }, 'device request failed');
      answer(errorAck('internal', 'internal error'));
    });
  }
}
