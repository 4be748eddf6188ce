import { z } from 'zod';
import { checkJsonValue, JSON_DEPTH_CEILING } from './json-limits.ts';

/** Ids of devices, users, tenants and topics: printable, bounded, safe in Redis keys and Kafka keys. */
export const Identifier = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:@-]+$/, 'may only hold letters, digits and . _ : @ -');

export const MessageId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9._:-]+$/, 'may only hold letters, digits and . _ : -');

/**
 * Any JSON value, nested at most `JSON_DEPTH_CEILING` deep. Checked by one iterative walk: zod's
 * recursive `z.json()` overflows the stack on a payload a few thousand levels deep, which turned a
 * 4 KB record into an exception that no retry could get past. Services enforce their configured
 * (lower) depth and their size limits before this runs.
 */
export const JsonPayload: z.ZodType<unknown> = z
  .custom<unknown>(
    (value) => value !== undefined && checkJsonValue(value, JSON_DEPTH_CEILING) === undefined,
    {
      message: `must be a JSON value nested at most ${JSON_DEPTH_CEILING} deep`,
    },
  )
  .meta({ description: `Any JSON value, nested at most ${JSON_DEPTH_CEILING} deep.` });

/** W3C trace context as carried in Kafka headers, internal requests and device messages. */
export const TraceContext = z.object({
  traceparent: z.string().max(128).optional(),
  tracestate: z.string().max(512).optional(),
});
export type TraceContext = z.infer<typeof TraceContext>;

/** Byte size of a payload once serialised, the unit of every payload limit. */
export function payloadBytes(payload: unknown): number {
  return Buffer.byteLength(JSON.stringify(payload) ?? 'null');
}
