import { context, logs, metrics, propagation, trace } from '@opentelemetry/api';
import {
  defaultResource,
  envDetector,
  hostDetector,
  osDetector,
  processDetector,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import { NodeSDK } from '@opentelemetry/sdk-node';
import type { SpanProcessor } from '@opentelemetry/sdk-trace';
import pkg from '../package.json' with { type: 'json' };

export interface TracingHandle {
  /** Whether an SDK was started (false when tracing is off by configuration). */
  readonly enabled: boolean;
  /** Flushes pending spans and unregisters the global tracer, context manager and propagator. Idempotent. */
  close(): Promise<void>;
}

export interface TracingOptions {
  /** `service.name`, e.g. `pushline-push-api`. OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES override it. */
  readonly serviceName: string;
  /** `service.instance.id`, e.g. the connection server id; distinguishes replicas in one trace. */
  readonly instanceId: string;
  /** `service.version`. Default: the platform version. */
  readonly serviceVersion?: string;
  /** Where the on/off decision reads OTEL_* from. Default `process.env` (the SDK itself always reads `process.env`). */
  readonly env?: NodeJS.ProcessEnv;
  /**
   * Span processors to use instead of the OTLP exporter configured from the environment. Passing
   * any turns tracing on regardless of the environment: tests capture spans in memory this way
   * (see `createSpanRecorder`).
   */
  readonly spanProcessors?: SpanProcessor[];
}

/** Thrown when tracing is started twice in one process: the OTel API has one global provider. */
export class TracingAlreadyStartedError extends Error {
  override readonly name = 'TracingAlreadyStartedError';
  constructor() {
    super('tracing is already started in this process; close the previous handle first');
  }
}

let active = false;

/**
 * Starts the OpenTelemetry NodeSDK for manually created spans, configured only by the standard
 * OTEL_* variables (OTLP exporter, protocol, sampler, resource attributes). It registers the
 * W3C trace-context + baggage propagator and the AsyncLocalStorage context manager, so the
 * active span follows `await`.
 *
 * Off unless OTEL_TRACES_EXPORTER (not `none`), OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, or span processors are passed; OTEL_SDK_DISABLED=true
 * always wins. When off, the API's no-op tracer is used and nothing is registered.
 *
 * Call it first in `main.ts`, before any service module creates a tracer. Metrics and logs stay
 * on prom-client and pino: the SDK's OTLP metric and log pipelines are only started when
 * OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER ask for them explicitly.
 */
export function startTracing(options: TracingOptions): TracingHandle {
  const env = options.env ?? process.env;
  const explicit = (options.spanProcessors?.length ?? 0) > 0;
  const fromEnv =
    (env['OTEL_TRACES_EXPORTER'] !== undefined && env['OTEL_TRACES_EXPORTER'] !== 'none') ||
    env['OTEL_EXPORTER_OTLP_ENDPOINT'] !== undefined ||
    env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] !== undefined;
  if ((!explicit && !fromEnv) || env['OTEL_SDK_DISABLED'] === 'true') {
    return { enabled: false, close: async () => {} };
  }
  if (active) throw new TracingAlreadyStartedError();

  const sdk = new NodeSDK({
    // Lowest priority: detectors and OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME (envDetector, last) win.
    resource: defaultResource().merge(
      resourceFromAttributes({
        'service.name': options.serviceName,
        'service.instance.id': options.instanceId,
        'service.version': options.serviceVersion ?? pkg.version,
      }),
    ),
    // The SDK's default set includes a detector that draws a random service.instance.id, which
    // would replace ours; OTEL_NODE_RESOURCE_DETECTORS still picks the set when it is given.
    ...(env['OTEL_NODE_RESOURCE_DETECTORS'] === undefined
      ? { resourceDetectors: [processDetector, hostDetector, osDetector, envDetector] }
      : {}),
    ...(explicit ? { spanProcessors: options.spanProcessors } : {}),
    ...(env['OTEL_METRICS_EXPORTER'] === undefined ? { metricReaders: [] } : {}),
    ...(env['OTEL_LOGS_EXPORTER'] === undefined ? { logRecordProcessors: [] } : {}),
    instrumentations: [],
  });
  sdk.start();
  active = true;

  let closing: Promise<void> | undefined;
  const close = async (): Promise<void> => {
    try {
      await sdk.shutdown();
    } finally {
      trace.disable();
      context.disable();
      propagation.disable();
      metrics.disable();
      logs.disable();
      active = false;
    }
  };
  return { enabled: true, close: () => (closing ??= close()) };
}
