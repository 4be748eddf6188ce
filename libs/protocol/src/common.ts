import { z } from 'zod';

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

/** Any JSON value; size limits are enforced by the services that accept it. */
export const JsonPayload: z.ZodType<unknown> = z.json();

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
