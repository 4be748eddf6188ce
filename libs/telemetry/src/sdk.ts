import { NodeSDK } from '@opentelemetry/sdk-node';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';

export interface TracingHandle {
  close(): Promise<void>;
}

/**
 * Starts the OpenTelemetry SDK, configured by the standard OTEL_* variables (OTLP exporter,
 * sampler, resource). Off unless OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT is set,
 * or span processors are passed in (tests capture spans in memory that way).
 */
export function startTracing(options: {
  serviceName: string;
  instanceId: string;
  env?: NodeJS.ProcessEnv;
  spanProcessors?: SpanProcessor[];
}): TracingHandle {
  const env = options.env ?? process.env;
  const enabled =
    (options.spanProcessors?.length ?? 0) > 0 ||
    (env['OTEL_TRACES_EXPORTER'] !== undefined && env['OTEL_TRACES_EXPORTER'] !== 'none') ||
    env['OTEL_EXPORTER_OTLP_ENDPOINT'] !== undefined ||
    env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'] !== undefined;
  if (!enabled || env['OTEL_SDK_DISABLED'] === 'true') return { close: async () => {} };
  process.env['OTEL_SERVICE_NAME'] ??= options.serviceName;
  const sdk = new NodeSDK({
    serviceName: env['OTEL_SERVICE_NAME'] ?? options.serviceName,
    ...(options.spanProcessors ? { spanProcessors: options.spanProcessors } : {}),
    instrumentations: [],
  });
  sdk.start();
  let closing: Promise<void> | undefined;
  return {
    close: () => (closing ??= sdk.shutdown()),
  };
}
