import { z } from 'zod';
import { Identifier, JsonPayload, MessageId } from './common.ts';
import { DeliveryOutcome } from './delivery.ts';

/**
 * The socket.io protocol between a device and a connection server, version 1.
 * docs/protocol.md is written from these schemas.
 */
export const DEVICE_PROTOCOL_VERSION = 1;

export const DeviceEvents = {
  /** server → device, with ack: a message for the device. */
  message: 'message',
  /** device → server, with ack: a message for another device. */
  send: 'send',
  /** device → server, with ack: subscribe to / unsubscribe from a topic. */
  subscribe: 'subscribe',
  unsubscribe: 'unsubscribe',
  /** server → device: reconnect (to any server) after `afterMs`; the server closes soon after. */
  reconnect: 'reconnect_hint',
  /** server → device, no ack: the token expires soon; answer with `refresh_token`. */
  tokenExpiring: 'token_expiring',
  /** device → server, with ack: a fresh token for this connection. */
  refreshToken: 'refresh_token',
} as const;

/** The device → server events answered through their ack (every other event gets an error ack). */
export const DEVICE_REQUEST_EVENTS = [
  DeviceEvents.subscribe,
  DeviceEvents.unsubscribe,
  DeviceEvents.send,
  DeviceEvents.refreshToken,
] as const;
export type DeviceRequestEvent = (typeof DEVICE_REQUEST_EVENTS)[number];

/** A device token as sent by the device: a compact JWT. */
export const DeviceToken = z.string().min(1).max(8192);

/** `auth` of the socket.io handshake. */
export const HandshakeAuth = z.object({ token: DeviceToken });

export const DeviceTokenClaims = z.object({
  sub: Identifier,
  uid: Identifier,
  tid: Identifier.optional(),
  /**
   * Topics the device may subscribe to besides its own `user:<uid>`: an entry matches exactly, or
   * as a prefix when it ends with `*` (a prefix never matches a topic in the `user:` namespace).
   */
  topics: z.array(z.string().max(128)).max(256).optional(),
  exp: z.number().int(),
});
export type DeviceTokenClaims = z.infer<typeof DeviceTokenClaims>;

/** Stable reason codes of a refused handshake (`connect_error` → `err.message`, details in `err.data`). */
export const AuthErrorCode = z.enum([
  'token_missing',
  'token_malformed',
  'token_expired',
  'token_invalid_signature',
  'token_invalid_claims',
  'handshake_timeout',
  'server_draining',
]);
export type AuthErrorCode = z.infer<typeof AuthErrorCode>;

/** server → device `message` payload. */
export const DeviceMessage = z.object({
  id: MessageId,
  payload: JsonPayload,
  /** Set on device-to-device messages. */
  from: Identifier.optional(),
  /** Set on topic broadcasts. */
  topic: Identifier.optional(),
  /** Milliseconds since epoch when the server emitted it. */
  sentAt: z.number().int(),
  /** W3C trace context, so a client can continue the trace. */
  traceparent: z.string().optional(),
  tracestate: z.string().optional(),
});
export type DeviceMessage = z.infer<typeof DeviceMessage>;

/** device → server ack of a `message`. Anything else, or no ack in time, is not `delivered`. */
export const DeviceMessageAck = z.union([
  z.object({ ok: z.literal(true) }),
  z.object({ ok: z.literal(false), reason: z.string().max(256).optional() }),
]);
export type DeviceMessageAck = z.infer<typeof DeviceMessageAck>;

/**
 * Longest ack timeout a sender may ask for, device (`send`) or backend (direct push): a sender
 * waiting longer is better served by a stored message (`ttlSeconds`) than by a held request.
 */
export const MAX_SEND_TIMEOUT_MS = 30_000;

/** device → server `send` (device-to-device). */
export const SendRequest = z.object({
  to: Identifier,
  payload: JsonPayload,
  id: MessageId.optional(),
  timeoutMs: z.number().int().positive().max(MAX_SEND_TIMEOUT_MS).optional(),
});
export type SendRequest = z.infer<typeof SendRequest>;

export const DeviceErrorCode = z.enum([
  'invalid_request',
  'payload_too_large',
  'forbidden',
  'rate_limited',
  'too_many_subscriptions',
  /** `refresh_token` only: the fresh token was refused; `error.reason` says why. */
  'token_rejected',
  'internal',
]);
export type DeviceErrorCode = z.infer<typeof DeviceErrorCode>;

/** Error ack for any device request. */
export const DeviceErrorAck = z.object({
  ok: z.literal(false),
  error: z.object({
    code: DeviceErrorCode,
    message: z.string(),
    /** With `token_rejected`: why, as the handshake would have said (`AuthErrorCode`). */
    reason: AuthErrorCode.optional(),
  }),
});
export type DeviceErrorAck = z.infer<typeof DeviceErrorAck>;

export const SendAck = z.union([
  z.object({
    ok: z.literal(true),
    id: MessageId,
    outcome: DeliveryOutcome,
    latencyMs: z.number().nonnegative(),
  }),
  DeviceErrorAck,
]);
export type SendAck = z.infer<typeof SendAck>;

export const SubscribeRequest = z.object({ topic: Identifier });
export type SubscribeRequest = z.infer<typeof SubscribeRequest>;
export const SubscribeAck = z.union([z.object({ ok: z.literal(true), topic: Identifier }), DeviceErrorAck]);
export type SubscribeAck = z.infer<typeof SubscribeAck>;

export const ReconnectReason = z.enum([
  'server_shutdown',
  'lifetime_expired',
  'replaced',
  'idle',
  /** The token expired and no fresh one came (`refresh_token`): get a fresh token, then reconnect. */
  'token_expired',
]);
export type ReconnectReason = z.infer<typeof ReconnectReason>;

export const ReconnectHint = z.object({
  reason: ReconnectReason,
  /** Wait this long before reconnecting; spreads a fleet's reconnects. */
  afterMs: z.number().int().nonnegative(),
});
export type ReconnectHint = z.infer<typeof ReconnectHint>;

/** server → device `token_expiring` payload (no ack). */
export const TokenExpiring = z.object({
  /** The token's `exp`, in milliseconds since epoch. */
  expiresAt: z.number().int(),
  /** When the server ends the connection (`reconnect_hint` with `token_expired`) unless it gets a fresh token. */
  disconnectAt: z.number().int(),
});
export type TokenExpiring = z.infer<typeof TokenExpiring>;

/**
 * device → server `refresh_token`: a fresh token for the same device, user and tenant (`sub`,
 * `uid`, `tid`); its `topics` replace the old ones, and subscriptions it no longer allows end.
 */
export const RefreshTokenRequest = z.object({ token: DeviceToken });
export type RefreshTokenRequest = z.infer<typeof RefreshTokenRequest>;

export const RefreshTokenAck = z.union([
  z.object({
    ok: z.literal(true),
    /** The fresh token's `exp`, in milliseconds since epoch. */
    expiresAt: z.number().int(),
  }),
  DeviceErrorAck,
]);
export type RefreshTokenAck = z.infer<typeof RefreshTokenAck>;
