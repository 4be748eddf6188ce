import { trace } from '@opentelemetry/api';
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

export interface LoggerOptions {
  /** Service name, written as `service` on every line. */
  readonly service: string;
  /** Default `info`. */
  readonly level?: string;
  /** Extra fields on every line, e.g. `{ serverId }`. */
  readonly base?: Record<string, unknown>;
  /** Default stdout. Tests pass a stream to inspect lines. */
  readonly destination?: DestinationStream;
}

/** JSON logs that carry the active trace_id and span_id, so a log line leads to its trace. */
export function createLogger(options: LoggerOptions): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: options.service, ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin() {
        const ctx = trace.getActiveSpan()?.spanContext();
        return ctx ? { trace_id: ctx.traceId, span_id: ctx.spanId } : {};
      },
    },
    options.destination ?? pino.destination({ sync: false }),
  );
}

/** A logger that writes nothing, for unit tests of pure logic. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
