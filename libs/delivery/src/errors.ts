import type { RoutedResult } from './types.ts';

/** Why a call to a connection server over the internal channel failed without a usable answer. */
export type TransportFailure =
  /** The channel to the server could not be opened: the call never left. */
  | 'server_unreachable'
  /** No answer within the call's timeout plus the transport's margin; it may have been acted on. */
  | 'server_timeout'
  /** The channel broke after the call was written; the server may have acted on it. */
  | 'server_lost'
  /** The server refused the internal token at the channel's handshake. */
  | 'unauthorized'
  /** The server does not speak this channel version (or has no channel). */
  | 'incompatible'
  /** The server refused the call as outside the contract (a bug on the calling side). */
  | 'invalid_request'
  /** The server answered outside the contract. */
  | 'invalid_response'
  /** Handling the call threw on the server (a broadcast through a failing adapter). */
  | 'server_error'
  /**
   * The call never left: the channel to the server had no credit for it (the server has as many
   * calls in hand as it allows) until the call's deadline, or too many calls were waiting already.
   */
  | 'overloaded'
  /** The transport is closed. */
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

  constructor(message: string, details: { failure: TransportFailure; serverUrl: string; cause?: unknown }) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.failure = details.failure;
    this.serverUrl = details.serverUrl;
  }
}

/**
 * The server refused our internal token at the channel's handshake (HTTP 401): a deployment error
 * (token mismatch between services), never a device outcome, so callers surface it loudly instead
 * of retrying.
 */
export class InternalAuthError extends DeliveryTransportError {
  override readonly name = 'InternalAuthError';

  constructor(serverUrl: string) {
    super(`connection server ${serverUrl} refused the internal token`, {
      failure: 'unauthorized',
      serverUrl,
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
