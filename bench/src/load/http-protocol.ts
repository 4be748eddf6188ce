import { z } from 'zod';

export const HttpLoadArgs = z.object({
  /** e.g. http://127.0.0.1:8080 */
  baseUrl: z.string(),
  /** `{device}` is replaced by a device id, `{id}` by a unique message id. */
  pathTemplate: z.string(),
  headers: z.record(z.string(), z.string()),
  /** JSON text; the same placeholders, plus `{t0}` (epoch ms when the request is sent). */
  bodyTemplate: z.string(),
  deviceIds: z.array(z.string()).min(1),
  concurrency: z.number().int().positive(),
  durationMs: z.number().int().positive(),
  /** Requests sent during this leading window are not counted (connection set-up, JIT). */
  warmupMs: z.number().int().nonnegative(),
  /** Per-request bound. */
  timeoutMs: z.number().int().positive(),
});
export type HttpLoadArgs = z.infer<typeof HttpLoadArgs>;

export const HttpLoadResult = z.object({
  /** Requests completed in the measured window. */
  requests: z.number().int(),
  /** Every request completed, warm-up and stragglers included (for per-request CPU cost). */
  total: z.number().int(),
  ms: z.number(),
  /** By response `outcome` field, else `status:<code>`, or `error:<code>`. */
  outcomes: z.record(z.string(), z.number()),
  /** Latency of requests whose outcome was `delivered`. */
  latencies: z.array(z.number()),
});
export type HttpLoadResult = z.infer<typeof HttpLoadResult>;
