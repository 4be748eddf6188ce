import {
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace';

export type { ReadableSpan, SpanProcessor };

export interface SpanRecorder {
  /** Pass to `startTracing({ spanProcessors: [recorder.spanProcessor] })`. */
  readonly spanProcessor: SpanProcessor;
  /** Every span exported since the last reset, in the order they ended. */
  spans(): ReadableSpan[];
  /** Resolves once every span ended so far is exported (export runs a microtask after `end()`). */
  flush(): Promise<void>;
  reset(): void;
}

/**
 * Captures finished spans in memory, for tests that assert on whole traces. Await `flush()`
 * before reading `spans()` for spans that just ended.
 */
export function createSpanRecorder(): SpanRecorder {
  const exporter = new InMemorySpanExporter();
  const spanProcessor = new SimpleSpanProcessor({ exporter });
  return {
    spanProcessor,
    spans: () => exporter.getFinishedSpans(),
    flush: () => spanProcessor.forceFlush(),
    reset: () => exporter.reset(),
  };
}
