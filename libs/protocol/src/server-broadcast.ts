import { z } from 'zod';
import { Identifier } from './common.ts';
import { DeviceMessage } from './device.ts';

/** Server-side event names of a broadcast's remote part (socket.io `serverSideEmit`, through the adapter). */
export const ServerBroadcastEvents = {
  request: 'pushline:broadcast',
  result: 'pushline:broadcast-result',
} as const;

/**
 * Connection server → every other connection server, through the socket.io adapter: deliver
 * `message` to your own subscribers of `topic`, waiting up to `timeoutMs` for their acks, and
 * answer with a `RemoteBroadcastResult`. The server a broadcast call reached sends one of these
 * and gets one answer per server, instead of one adapter message per subscriber's ack.
 */
export const RemoteBroadcast = z.object({
  /** Names the broadcast's answers; random per broadcast. */
  requestId: z.string().min(1).max(64),
  topic: Identifier,
  message: DeviceMessage,
  timeoutMs: z.number().int().positive().max(120_000),
});
export type RemoteBroadcast = z.infer<typeof RemoteBroadcast>;

/** Every other connection server → all: how many of its subscribers acked `{ ok: true }` in time. */
export const RemoteBroadcastResult = z.object({
  requestId: z.string().min(1).max(64),
  delivered: z.number().int().nonnegative(),
});
export type RemoteBroadcastResult = z.infer<typeof RemoteBroadcastResult>;
