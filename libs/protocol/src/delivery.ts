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

/** Internal: a `deliver` call over the channel to the connection server that holds the device. */
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
 * Reasons a caller of the internal channel gives when it has no answer from the connection
 * server. Whether the message may have reached the device decides the outcome:
 * - `server_unreachable` (outcome `not_connected`): the channel to the server could not be
 *   opened, so the call never left the caller. Known not delivered.
 * - `server_timeout` (outcome `timeout`): the server gave no answer within the request's
 *   `timeoutMs` plus a margin. May have been delivered.
 * - `server_lost` (outcome `timeout`): the channel to the server broke after the call was
 *   written (the server died or restarted mid-call). May have been delivered.
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

/** Internal: a `broadcast` call over the channel to any connection server; reaches a topic's subscribers on every server. */
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
