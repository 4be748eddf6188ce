export { createLogger, silentLogger } from './logger.ts';
export type { Logger, LoggerOptions } from './logger.ts';
export {
  createMetricsRegistry,
  LATENCY_BUCKETS_S,
  END_TO_END_BUCKETS_S,
  RESERVED_LABELS,
  ReservedLabelError,
  Counter,
  Gauge,
  Histogram,
  Registry,
} from './metrics.ts';
export { stageCounter, stageHistogram, publishToAckHistogram, PUBLISH_TO_ACK_SOURCES } from './stages.ts';
export type { StageCounterOptions, StageHistogramOptions, LabelValues } from './stages.ts';
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
export { startTracing, TracingAlreadyStartedError } from './sdk.ts';
export type { TracingHandle, TracingOptions } from './sdk.ts';
export { createSpanRecorder } from './recorder.ts';
export type { SpanRecorder, ReadableSpan, SpanProcessor } from './recorder.ts';
export { parsePrometheusText, findSamples, sumSamples, PromParseError } from './prom-text.ts';
export type { PromFamily, PromSample, PromMetricType } from './prom-text.ts';
