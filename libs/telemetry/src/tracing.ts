import {
  context,
  propagation,
  trace,
  SpanKind,
  SpanStatusCode,
  type Context,
  type Span,
  type Tracer,
} from '@opentelemetry/api';

export { context, propagation, trace, SpanKind, SpanStatusCode };
export type { Context, Span, Tracer };

/** W3C headers of a context, for Kafka headers, internal requests and device messages. */
export function injectTraceHeaders(ctx: Context = context.active()): {
  traceparent?: string;
  tracestate?: string;
} {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  const out: { traceparent?: string; tracestate?: string } = {};
  if (carrier['traceparent']) out.traceparent = carrier['traceparent'];
  if (carrier['tracestate']) out.tracestate = carrier['tracestate'];
  return out;
}

/** The context carried by W3C headers (a Kafka record's, a request's), or the active one if none. */
export function extractTraceContext(
  headers: { traceparent?: string | undefined; tracestate?: string | undefined } | undefined,
): Context {
  if (!headers?.traceparent) return context.active();
  const carrier: Record<string, string> = { traceparent: headers.traceparent };
  if (headers.tracestate) carrier['tracestate'] = headers.tracestate;
  return propagation.extract(context.active(), carrier);
}

/**
 * Runs `fn` inside a span that ends when `fn` settles, recording a thrown error on it.
 * Attributes set by `fn` (e.g. the delivery outcome) land on the same span.
 */
export async function withSpan<T>(
  tracer: Tracer,
  name: string,
  options: { kind?: SpanKind; attributes?: Record<string, string | number | boolean>; parent?: Context },
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  const parent = options.parent ?? context.active();
  const span = tracer.startSpan(
    name,
    { kind: options.kind ?? SpanKind.INTERNAL, attributes: options.attributes ?? {} },
    parent,
  );
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (err) {
    span.recordException(err instanceof Error ? err : new Error(String(err)));
    span.setStatus({ code: SpanStatusCode.ERROR });
    throw err;
  } finally {
    span.end();
  }
}
