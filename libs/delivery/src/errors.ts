import type { RoutedResult } from './types.ts';

/** Why a call to a connection server's internal endpoint failed without a usable answer. */
export type TransportFailure =
  /** The connection to the server could not be opened: the request never left. */
  | 'server_unreachable'
  /** No answer within the request's timeout plus the transport's margin; it may have been acted on. */
  | 'server_timeout'
  /** The connection broke after the request was sent; the server may have acted on it. */
  | 'server_lost'
  /** The server answered with a non-2xx status. */
  | 'http_status'
  /** A 2xx answer whose body is not the agreed JSON. */
  | 'invalid_response'
  /** Anything else on the socket (a body too large, a closed transport). */
  | 'network';

/**
 * A connection server could not be asked, or answered outside the contract. For `deliver` the
 * unreachable, timeout and lost cases are outcomes, not errors (see `TransportReason` of
 * @pushline/protocol); this is thrown for the rest, and for every failure of `broadcast`.
 */
export class DeliveryTransportError extends Error {
  override readonly name: string = 'DeliveryTransportError';
  readonly failure: TransportFailure;
  readonly serverUrl: string;
  /** HTTP status, when the server answered. */
  readonly status: number | undefined;

  constructor(
    message: string,
    details: { failure: TransportFailure; serverUrl: string; status?: number; cause?: unknown },
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.failure = details.failure;
    this.serverUrl = details.serverUrl;
    this.status = details.status;
  }
}

/**
 * The server rejected our internal token (HTTP 401): a deployment error (token mismatch between
 * services), never a device outcome, so callers surface it loudly instead of retrying.
 */
export class InternalAuthError extends DeliveryTransportError {
  override readonly name = 'InternalAuthError';

  constructor(serverUrl: string) {
    super(`connection server ${serverUrl} rejected the internal token (401)`, {
      failure: 'http_status',
      serverUrl,
      status: 401,
    });
  }
}

/**
 * Some deliveries of a fan-out (toUser) threw. Every delivery has settled: `results` holds the
 * ones that produced an outcome, so a caller can record them before deciding what to retry, and
 * `failedDeviceIds[i]` is the device whose delivery threw `errors[i]`.
 */
export class PartialDeliveryError extends AggregateError {
  override readonly name = 'PartialDeliveryError';
  readonly results: readonly RoutedResult[];
  readonly failedDeviceIds: readonly string[];

  constructor(errors: unknown[], results: readonly RoutedResult[], failedDeviceIds: readonly string[] = []) {
    super(errors, `${errors.length} of ${errors.length + results.length} deliveries failed`);
    this.results = results;
    this.failedDeviceIds = failedDeviceIds;
  }
}
