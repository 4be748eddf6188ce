import { z } from 'zod';
import { Identifier, JsonPayload, MessageId } from './common.ts';
import { DeliveryOutcome, DeliverySource } from './delivery.ts';

/**
 * Records on Kafka topics. Each carries `v` so consumers can branch on the schema version;
 * trace context travels in record headers (`traceparent`, `tracestate`), not in the value.
 */

export const DisconnectReason = z.enum([
  'client_disconnect',
  'transport_close',
  'transport_error',
  'ping_timeout',
  'replaced',
  'lifetime_expired',
  'idle_timeout',
  'server_shutdown',
  'server_kicked',
  /** The token expired during the connection and the device sent no fresh one (`refresh_token`). */
  'token_expired',
  'unknown',
]);
export type DisconnectReason = z.infer<typeof DisconnectReason>;

/** `<prefix>connection-events`, keyed by device id. */
export const ConnectionEvent = z.discriminatedUnion('type', [
  z.object({
    v: z.literal(1),
    type: z.literal('connected'),
    deviceId: Identifier,
    userId: Identifier,
    tenantId: Identifier.optional(),
    serverId: z.string(),
    connectionId: z.string(),
    at: z.number().int(),
  }),
  z.object({
    v: z.literal(1),
    type: z.literal('disconnected'),
    deviceId: Identifier,
    userId: Identifier,
    tenantId: Identifier.optional(),
    serverId: z.string(),
    connectionId: z.string(),
    at: z.number().int(),
    reason: DisconnectReason,
    durationMs: z.number().int().nonnegative(),
  }),
]);
export type ConnectionEvent = z.infer<typeof ConnectionEvent>;

export const PushTarget = z.discriminatedUnion('type', [
  z.object({ type: z.literal('device'), id: Identifier }),
  z.object({ type: z.literal('user'), id: Identifier }),
  z.object({ type: z.literal('topic'), id: Identifier }),
]);
export type PushTarget = z.infer<typeof PushTarget>;

/** Kafka key of a push request: the target, so order holds per device (and per user/topic). */
export function pushTargetKey(target: PushTarget): string {
  return `${target.type}:${target.id}`;
}

/** `<prefix>push-requests`, keyed by `pushTargetKey(target)`. */
export const PushRequest = z.object({
  v: z.literal(1),
  /** Unique per request and origin; the idempotency key. */
  id: MessageId,
  /**
   * Who sent it: the id of the API key that published it (absent for records produced straight
   * into Kafka). Request ids are deduplicated within an origin only, so no sender can suppress
   * another's request by reusing its id.
   */
  origin: Identifier.optional(),
  target: PushTarget,
  payload: JsonPayload,
  /** Seconds to keep the message for an offline device; absent or 0: deliver now or never. */
  ttlSeconds: z.number().int().min(0).max(2_592_000).optional(),
  /** Milliseconds since epoch when the API accepted it. */
  createdAt: z.number().int(),
});
export type PushRequest = z.infer<typeof PushRequest>;

/** `<prefix>delivery-events`, keyed by device id (topic id for broadcasts): exactly one terminal outcome per request per device. */
export const DeliveryEvent = z.object({
  v: z.literal(1),
  requestId: MessageId,
  target: PushTarget,
  /** Absent for topic broadcasts, which are reported as one aggregate event. */
  deviceId: Identifier.optional(),
  outcome: DeliveryOutcome,
  /** A stored message is not terminal: `stored` is followed later by delivered or expired. */
  terminal: z.boolean(),
  stored: z.boolean().optional(),
  source: DeliverySource,
  /** Broadcasts: how many subscribers acked. */
  deliveredCount: z.number().int().nonnegative().optional(),
  /** Why a message was not delivered, when known: `ttl_elapsed`, `evicted`, `server_unreachable`, a device's nack reason. */
  reason: z.string().max(256).optional(),
  /** From request creation to the outcome. */
  latencyMs: z.number().nonnegative(),
  attempts: z.number().int().positive(),
  at: z.number().int(),
});
export type DeliveryEvent = z.infer<typeof DeliveryEvent>;

/**
 * A request's delivery events as the message processor records them in Redis
 * (`<P>outcome:{<origin>/<id>}`) before it publishes them, with when it recorded them. A processor
 * that takes the request over after the first one died publishes those of them the
 * delivery-events topic does not have, instead of delivering the request again.
 */
export const RecordedOutcome = z.object({
  at: z.number().int(),
  events: z.array(DeliveryEvent),
});
export type RecordedOutcome = z.infer<typeof RecordedOutcome>;

/** Headers set on a dead-lettered record in `<prefix>push-requests.dlq`. */
export const DlqHeaders = {
  reason: 'pushline-dlq-reason',
  detail: 'pushline-dlq-detail',
  sourceTopic: 'pushline-dlq-source-topic',
  sourcePartition: 'pushline-dlq-source-partition',
  sourceOffset: 'pushline-dlq-source-offset',
} as const;
/**
 * Why a push-requests record was dead-lettered: `unparseable` (a tombstone, empty, or not JSON),
 * `schema_invalid` (JSON, but not a v1 request), `payload_too_large` (the record or its payload is
 * over its limit), `too_deep` (nested deeper than the configured JSON depth, refused before it is
 * parsed), `processing_failed` (decoding or handling threw on every one of its attempts while the
 * processor's Redis and Kafka were healthy).
 */
export const DlqReason = z.enum([
  'unparseable',
  'schema_invalid',
  'payload_too_large',
  'too_deep',
  'processing_failed',
]);
export type DlqReason = z.infer<typeof DlqReason>;

/**
 * A message kept in Redis for an offline device (store-and-forward). Written by the message
 * processor and push-api, drained by the connection server when the device reconnects.
 */
export const StoredMessage = z.object({
  v: z.literal(1),
  requestId: MessageId,
  /** `PushRequest.origin` of the request it came from; stored messages are deduplicated per origin. */
  origin: Identifier.optional(),
  target: PushTarget,
  payload: JsonPayload,
  createdAt: z.number().int(),
  expiresAt: z.number().int(),
  /** Deliveries tried before it was stored (usually 1 when the device was found offline). */
  attempts: z.number().int().nonnegative(),
  traceparent: z.string().optional(),
  tracestate: z.string().optional(),
});
export type StoredMessage = z.infer<typeof StoredMessage>;
