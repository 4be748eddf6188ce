import { z } from 'zod';
import { Identifier } from './common.ts';
import { BroadcastRequest, BroadcastResult, DeliverRequest, DeliverResult } from './delivery.ts';

/**
 * The internal channel (docs/internal-protocol.md): one WebSocket per pair of peers, opened by the
 * caller (push-api, message processor, a connection server) to a connection server's internal port.
 * Every internal call goes over it as one item of a frame; each item's outcome comes back in a
 * result frame as soon as it is known.
 */

/** Path of the channel's WebSocket upgrade on a connection server's internal port. */
export const CHANNEL_PATH = '/internal/v1/channel';

/** The frame format's version. A peer asks for it as the WebSocket subprotocol `CHANNEL_PROTOCOL`. */
export const CHANNEL_VERSION = 1;
export const CHANNEL_PROTOCOL = `pushline-channel.v${CHANNEL_VERSION}`;

/** Response header of the upgrade: calls a caller may have unanswered on the connection (its credit). */
export const CHANNEL_WINDOW_HEADER = 'x-pushline-channel-window';

/** Most calls in one frame; a caller sends more in several frames. */
export const CHANNEL_MAX_FRAME_CALLS = 1000;

/**
 * Levels of a calls frame above a payload: `{ "calls": [ { "req": { "payload": … } } ] }`. The
 * receiver bounds a frame's depth at PUSHLINE_MAX_JSON_DEPTH plus these.
 */
export const CHANNEL_ENVELOPE_DEPTH = 4;

/** A call's id, unique among the calls unanswered on one connection. */
const CallId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/**
 * The device reconnected to another server, so the connection `connectionId` here (if still open)
 * is closed with reason `replaced` (Zuul issue #1825: otherwise the old connection lingers until
 * its TCP connection dies).
 */
export const ReplacedNotice = z.object({ deviceId: Identifier, connectionId: z.string().min(1).max(64) });
export type ReplacedNotice = z.infer<typeof ReplacedNotice>;

export const ReplacedResult = z.object({ closed: z.boolean() });
export type ReplacedResult = z.infer<typeof ReplacedResult>;

/**
 * A payload inside a frame that came out of `JSON.parse`: the frame's depth was bounded on its text
 * before it was parsed, so the payload is not walked again field by field.
 */
const ParsedPayload = z.custom<unknown>((v) => v !== undefined, { message: 'payload is required' });

export const ChannelCall = z.discriminatedUnion('op', [
  z.object({ id: CallId, op: z.literal('deliver'), req: DeliverRequest.extend({ payload: ParsedPayload }) }),
  z.object({
    id: CallId,
    op: z.literal('broadcast'),
    req: BroadcastRequest.extend({ payload: ParsedPayload }),
  }),
  z.object({ id: CallId, op: z.literal('replaced'), req: ReplacedNotice }),
]);
export type ChannelCall = z.infer<typeof ChannelCall>;
export type ChannelOp = ChannelCall['op'];

/** Caller → connection server: calls, each handled on its own. */
export const ChannelCallsFrame = z.object({
  calls: z.array(ChannelCall).min(1).max(CHANNEL_MAX_FRAME_CALLS),
});
export type ChannelCallsFrame = z.infer<typeof ChannelCallsFrame>;

/**
 * Why a connection server did not handle a call. `invalid_request`: the call broke the contract
 * (the caller's bug); `window_exceeded`: the caller had more calls unanswered than its credit;
 * `internal_error`: handling it threw.
 */
export const ChannelErrorCode = z.enum(['invalid_request', 'window_exceeded', 'internal_error']);
export type ChannelErrorCode = z.infer<typeof ChannelErrorCode>;

/** The outcome of call `id`: the member named after its op, or `error`. */
export const ChannelResult = z.object({
  id: CallId,
  deliver: DeliverResult.optional(),
  broadcast: BroadcastResult.optional(),
  replaced: ReplacedResult.optional(),
  error: z.object({ code: ChannelErrorCode, message: z.string().max(1024) }).optional(),
});
export type ChannelResult = z.infer<typeof ChannelResult>;

/** Connection server → caller: outcomes, in the order they became known. */
export const ChannelResultsFrame = z.object({
  results: z.array(ChannelResult).min(1).max(CHANNEL_MAX_FRAME_CALLS),
});
export type ChannelResultsFrame = z.infer<typeof ChannelResultsFrame>;
