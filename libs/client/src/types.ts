import type { AuthErrorCode, DeliveryOutcome, DeviceEvents, ReconnectHint } from '@pushline/protocol';
import type { PushlineError } from './errors.ts';
import type { TraceContext } from './trace.ts';

/** The socket.io event names of docs/protocol.md; checked against @pushline/protocol at compile time. */
export const WIRE_EVENTS = {
  message: 'message',
  send: 'send',
  subscribe: 'subscribe',
  unsubscribe: 'unsubscribe',
  reconnect: 'reconnect_hint',
  tokenExpiring: 'token_expiring',
  refreshToken: 'refresh_token',
} as const satisfies typeof DeviceEvents;

/**
 * - `connecting`: a connection attempt is under way (token, transport, handshake).
 * - `connected`: the server accepted the device; messages flow.
 * - `disconnected`: no connection; the client is waiting to reconnect, or was told not to (idle).
 * - `closed`: stopped for good (the app closed it, the token was refused, or it was replaced).
 */
export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** Why the client asks for a token. */
export type TokenRequestReason =
  /** First connection, or no token held. */
  | 'connect'
  /** The held token expires soon (the client renews it ahead of `exp`). */
  | 'expiring'
  /** The server announced that the connection's token is about to expire. */
  | 'token_expiring'
  /** The server refused the held token; `code` says why. */
  | 'auth_error';

export interface TokenRequest {
  readonly reason: TokenRequestReason;
  /** Set when `reason` is `auth_error`. */
  readonly code?: AuthErrorCode;
}

/** Returns a device token (a JWT your backend signed). Called at connect, before `exp`, and on auth errors. */
export type TokenProvider = (request: TokenRequest) => string | Promise<string>;

export interface ReconnectOptions {
  /** First backoff ceiling. Default 1000 ms. */
  readonly initialDelayMs?: number;
  /** Largest backoff ceiling. Default 60 000 ms. */
  readonly maxDelayMs?: number;
  /** A connection that lasted this long resets the backoff. Default 30 000 ms. */
  readonly stableAfterMs?: number;
}

export interface PushlineClientOptions {
  /**
   * One load-balancer URL, or a list of connection-server device URLs that the client rotates
   * through: each new attempt after a failure or a drain goes to the next one.
   */
  readonly url: string | readonly string[];
  readonly token: TokenProvider;
  readonly reconnect?: ReconnectOptions;
  /** Message ids remembered across connections to drop redeliveries. Default 1000. */
  readonly dedupeWindow?: number;
  /** Fetch a new token this long before the held one expires (at most half its life). Default 60 000 ms. */
  readonly tokenRefreshMarginMs?: number;
  /** How long a subscribe/unsubscribe may wait for the server's answer. Default 10 000 ms. */
  readonly requestTimeoutMs?: number;
  /**
   * Longest a message's handlers may run; past it the message is nacked (`handler_timeout`) and the
   * next message is handled. Default 10 000 ms.
   */
  readonly handlerTimeoutMs?: number;
  /** How long one connection attempt may take before it counts as failed. Default 10 000 ms. */
  readonly connectTimeoutMs?: number;
  /** socket.io transports. Default `['websocket']`, which is all the server accepts by default. */
  readonly transports?: readonly ('websocket' | 'polling')[];
}

/** A message from the platform, as the app sees it. */
export interface PushlineMessage {
  readonly id: string;
  readonly payload: unknown;
  /** Set on device-to-device messages: the sending device. */
  readonly from?: string;
  /** Set on topic broadcasts. */
  readonly topic?: string;
  /** When the server emitted it (ms since epoch). */
  readonly sentAt: number;
  /** W3C trace context of the server's `device ack` span, to continue the trace in the app. */
  readonly traceparent?: string;
  readonly tracestate?: string;
  /** `traceparent`, parsed. */
  readonly trace?: TraceContext;
}

/**
 * Handles one message. Resolving acks it (`delivered` for the sender); throwing nacks it with the
 * error's message as the reason (`rejected`). Messages are handled one at a time, in arrival order.
 */
export type MessageHandler = (message: PushlineMessage) => void | Promise<void>;

/** What became of a device-to-device message. */
export type SendOutcome = Exclude<DeliveryOutcome, 'expired'> | 'rate_limited';

export interface SendResult {
  readonly id: string;
  readonly outcome: SendOutcome;
  /** Emit → target's ack (or timeout), measured by the server; absent for `rate_limited` and local timeouts. */
  readonly latencyMs?: number;
}

export interface SendOptions {
  /** How long the target has to ack, 1–30000. Default: the server's (5000). */
  readonly timeoutMs?: number;
  /** Idempotency key; generated when absent. Reuse it to retry a send. */
  readonly id?: string;
}

export interface DisconnectInfo {
  /** The socket.io disconnect reason, or the connect error's code when an attempt failed. */
  readonly reason: string;
  /** The server's reconnect hint, when it sent one before closing. */
  readonly hint?: ReconnectHint;
  readonly willReconnect: boolean;
  /** When `willReconnect`: the wait before the next attempt. */
  readonly reconnectInMs?: number;
}

export interface ClosedInfo {
  readonly reason: 'client' | 'replaced' | 'auth_failed';
  readonly error?: PushlineError;
}

/** The events of a `PushlineClient`. */
export interface PushlineClientEvents {
  state: { readonly state: ConnectionState; readonly previous: ConnectionState };
  connected: { readonly url: string };
  disconnected: DisconnectInfo;
  closed: ClosedInfo;
  /** Something went wrong that the client recovers from by itself (it is also reflected in states). */
  error: PushlineError;
  /** A topic could not be restored after a reconnect and was dropped. */
  subscriptionFailed: { readonly topic: string; readonly error: PushlineError };
  /** A redelivered message id was answered from the dedupe window without reaching the app. */
  duplicate: { readonly id: string };
}
