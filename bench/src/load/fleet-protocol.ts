import { z } from 'zod';

/** Commands the driver sends to a device fleet process, and the fleet's answers. */

const Credential = z.object({ id: z.string(), userId: z.string(), token: z.string() });

export const ConnectArgs = z.object({
  devices: z.array(Credential),
  /** Device k connects to urls[k % urls.length] unless `pin` is set. */
  urls: z.array(z.string()).min(1),
  /** Every device connects to urls[pin] first. */
  pin: z.number().int().nonnegative().optional(),
  /** Handshakes in flight at once. */
  concurrency: z.number().int().positive(),
  timeoutMs: z.number().int().positive(),
  /**
   * After an unexpected disconnect, reconnect to the next url in the list after a random delay of
   * 0.5–1.5 × this value (socket.io-client's own default is 1000 ms with factor 0.5). 0 disables.
   */
  reconnectDelayMs: z.number().int().nonnegative(),
  /**
   * Where reconnects go: a random url of this list each attempt (a client's list of live servers,
   * as a load balancer would hand out). Default: the next url of `urls` after the one that failed.
   */
  reconnectUrls: z.array(z.string()).min(1).optional(),
  /** The devices receive messages and never ack them, like phones whose app froze. Default false. */
  silent: z.boolean().optional(),
});
export type ConnectArgs = z.infer<typeof ConnectArgs>;

export const ConnectResult = z.object({
  connected: z.number().int(),
  failed: z.number().int(),
  ms: z.number(),
  errors: z.record(z.string(), z.number()),
});
export type ConnectResult = z.infer<typeof ConnectResult>;

export const SubscribeArgs = z.object({ topic: z.string(), concurrency: z.number().int().positive() });
export const SubscribeResult = z.object({ ok: z.number().int(), failed: z.number().int(), ms: z.number() });
export type SubscribeResult = z.infer<typeof SubscribeResult>;

export const FleetStats = z.object({
  connected: z.number().int(),
  received: z.number().int(),
  /** Milliseconds from the `t0` stamped in a payload to the device acking it. */
  latencies: z.array(z.number()),
  reconnects: z.number().int(),
  reconnectErrors: z.number().int(),
  /** Failed reconnect attempts by error message. */
  reconnectErrorKinds: z.record(z.string(), z.number()),
  /** Epoch ms of the last message received, 0 when none. */
  lastReceivedAt: z.number(),
});
export type FleetStats = z.infer<typeof FleetStats>;

export const D2dArgs = z.object({
  /** [sender, target] device ids, both held by this fleet. */
  pairs: z.array(z.tuple([z.string(), z.string()])).min(1),
  ratePerS: z.number().positive(),
  durationMs: z.number().int().positive(),
  timeoutMs: z.number().int().positive(),
});
export type D2dArgs = z.infer<typeof D2dArgs>;

export const D2dResult = z.object({
  sent: z.number().int(),
  ms: z.number(),
  outcomes: z.record(z.string(), z.number()),
  /** Round trips (send → ack with the outcome) that ended `delivered`. */
  latencies: z.array(z.number()),
  /** Round trips slower than SLOW_MS, by the second of the run they were sent in: shows whether a tail is warm-up or periodic. */
  slowBySecond: z.array(z.number().int()),
});
export type D2dResult = z.infer<typeof D2dResult>;

/** A round trip slower than this counts in D2dResult.slowBySecond. */
export const SLOW_MS = 20;

export const Empty = z.object({}).loose();
