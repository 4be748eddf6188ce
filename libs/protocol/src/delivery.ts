import { z } from 'zod';
import { Identifier, JsonPayload, MessageId, TraceContext } from './common.ts';

/**
 * The outcome of handing one message to one device. `expired` is only recorded by the
 * store-and-forward path; a live delivery ends in one of the other four.
 */
export const DeliveryOutcome = z.enum(['delivered', 'not_connected', 'timeout', 'rejected', 'expired']);
export type DeliveryOutcome = z.infer<typeof DeliveryOutcome>;

export const DeliverySource = z.enum(['direct', 'async', 'd2d', 'offline']);
export type DeliverySource = z.infer<typeof DeliverySource>;

/** Internal: POST /internal/v1/deliver on the connection server that holds the device. */
export const DeliverRequest = z.object({
  messageId: MessageId,
  deviceId: Identifier,
  /** When set, the message is only delivered to this very connection (guards against a stale registry entry). */
  connectionId: z.string().max(64).optional(),
  payload: JsonPayload,
  source: DeliverySource,
  /** Sender device, for device-to-device messages. */
  from: Identifier.optional(),
  /**
   * Sender's user and tenant (`uid`, `tid` of its token), for device-to-device messages: the
   * receiving server checks its device-to-device policy against them and the live connection's
   * claims, and answers `not_connected` (as for an offline device) when the pair is not allowed.
   */
  fromUser: Identifier.optional(),
  fromTenant: Identifier.optional(),
  /**
   * Who chose `messageId` for a backend message: the id of the API key of a direct push, the
   * request's `PushRequest.origin` on the async path and for stored messages. The connection's
   * memory of sent ids is kept per origin (as device-to-device ids are per `from`), so one key
   * reusing another's id never has its message answered `duplicate` without being sent.
   */
  origin: Identifier.optional(),
  topic: Identifier.optional(),
  timeoutMs: z.number().int().positive().max(120_000),
  trace: TraceContext.optional(),
});
export type DeliverRequest = z.infer<typeof DeliverRequest>;

/**
 * Reasons a caller of the internal delivery endpoint gives when it has no answer from the
 * connection server. Whether the message may have reached the device decides the outcome:
 * - `server_unreachable` (outcome `not_connected`): the connection to the server could not be
 *   opened, so the request never left the caller. Known not delivered.
 * - `server_timeout` (outcome `timeout`): the server gave no answer within the request's
 *   `timeoutMs` plus a margin. May have been delivered.
 * - `server_lost` (outcome `timeout`): the connection to the server broke after the request was
 *   sent (the server died or restarted mid-request). May have been delivered.
 * A `timeout` is therefore the "may have been delivered" outcome on every path; a caller that
 * tries again must reuse the message id so the device can drop the duplicate.
 */
export const TransportReason = z.enum(['server_unreachable', 'server_timeout', 'server_lost']);
export type TransportReason = z.infer<typeof TransportReason>;

export const DeliverResult = z.object({
  outcome: z.enum(['delivered', 'not_connected', 'timeout', 'rejected']),
  /** Time from the server emitting the message to the device's ack, or to the timeout. */
  latencyMs: z.number().nonnegative(),
  reason: z.string().max(256).optional(),
  /** The device had already received this id on this connection; it was not sent again. */
  duplicate: z.boolean().optional(),
});
export type DeliverResult = z.infer<typeof DeliverResult>;

/** Most items one `POST /internal/v1/deliver-batch` may carry. */
export const DELIVER_BATCH_MAX = 500;

/**
 * Internal: POST /internal/v1/deliver-batch on the connection server that holds the devices. Each
 * item is delivered on its own (own ack, own timeout), all at once; the caller puts at most one
 * item per device in a batch when their order matters.
 */
export const DeliverBatchRequest = z.object({
  items: z.array(DeliverRequest).min(1).max(DELIVER_BATCH_MAX),
});
export type DeliverBatchRequest = z.infer<typeof DeliverBatchRequest>;

/**
 * `DeliverRequest` and `DeliverBatchRequest` for a body straight out of `JSON.parse`, which can only
 * hold JSON values: the same fields and limits, but the payload is not walked a second time (the
 * recursive JSON check is most of the per-item parse cost of a batch).
 */
export const DeliverRequestFromJson = DeliverRequest.extend({
  payload: z.custom<z.infer<typeof JsonPayload>>((v) => v !== undefined, { message: 'payload is required' }),
});
export const DeliverBatchRequestFromJson = z.object({
  items: z.array(DeliverRequestFromJson).min(1).max(DELIVER_BATCH_MAX),
});

/**
 * One result per item, in item order; sent when the last item has its outcome. The answer to a
 * caller that does not ask for the streamed form (`DELIVER_BATCH_STREAM_TYPE`).
 */
export const DeliverBatchResult = z.object({ results: z.array(DeliverResult) });
export type DeliverBatchResult = z.infer<typeof DeliverBatchResult>;

/**
 * Media type of the streamed deliver-batch answer. A caller that lists it in `accept` gets one
 * `DeliverBatchLine` per item, newline-delimited, each written as soon as that item has its outcome
 * (in completion order, not item order); the response ends after the last line. A server from
 * before the streamed form ignores `accept` and answers `DeliverBatchResult` as `application/json`.
 */
export const DELIVER_BATCH_STREAM_TYPE = 'application/x-ndjson';

/** One line of the streamed deliver-batch answer: the outcome of item `index` of the request. */
export const DeliverBatchLine = z.object({
  index: z
    .number()
    .int()
    .nonnegative()
    .max(DELIVER_BATCH_MAX - 1),
  result: DeliverResult,
});
export type DeliverBatchLine = z.infer<typeof DeliverBatchLine>;

/** Internal: POST /internal/v1/broadcast on any connection server; reaches a topic's subscribers on every server. */
export const BroadcastRequest = z.object({
  messageId: MessageId,
  topic: Identifier,
  payload: JsonPayload,
  timeoutMs: z.number().int().positive().max(120_000),
  trace: TraceContext.optional(),
});
export type BroadcastRequest = z.infer<typeof BroadcastRequest>;

export const BroadcastResult = z.object({
  /** Subscribers that acked within the timeout, across all servers. */
  delivered: z.number().int().nonnegative(),
  latencyMs: z.number().nonnegative(),
});
export type BroadcastResult = z.infer<typeof BroadcastResult>;
