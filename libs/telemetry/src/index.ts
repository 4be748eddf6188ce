export { createLogger, silentLogger } from './logger.ts';
export type { Logger, LoggerOptions } from './logger.ts';
export { createMetricsRegistry, LATENCY_BUCKETS_S, Counter, Gauge, Histogram, Registry } from './metrics.ts';
export {
  injectTraceHeaders,
  extractTraceContext,
  withSpan,
  context,
  propagation,
  trace,
  SpanKind,
  SpanStatusCode,
} from './tracing.ts';
export type { Context, Span, Tracer } from './tracing.ts';
export { startTracing } from './sdk.ts';
export type { TracingHandle } from './sdk.ts';
