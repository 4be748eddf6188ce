import type { NextFunction, Request, RequestHandler, Response } from 'express';
import {
  SpanKind,
  SpanStatusCode,
  context,
  extractTraceContext,
  trace,
  type Context,
  type Tracer,
} from '@pushline/telemetry';
import type { ApiMetrics } from './metrics.ts';

/** The route template express matched (`/v1/devices/:deviceId/messages`), if any. */
function routeTemplate(req: Request): string | undefined {
  const route: unknown = (req as { route?: { path?: unknown } }).route?.path;
  return typeof route === 'string' ? route : undefined;
}

/** The request's trace context (its SERVER span), for handlers that run after the body parser. */
export function traceContextOf(res: Response): Context {
  return (res.locals as { traceContext?: Context }).traceContext ?? context.active();
}

/**
 * One SERVER span and one metrics sample per request. The span continues a `traceparent` sent by
 * the caller and is named after the route template once express has matched it, as the HTTP
 * semantic conventions ask (`POST /v1/devices/:deviceId/messages`).
 */
export function requestTelemetry(tracer: Tracer, metrics: ApiMetrics): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const started = performance.now();
    const parent = extractTraceContext({
      traceparent: req.get('traceparent'),
      tracestate: req.get('tracestate'),
    });
    const span = tracer.startSpan(req.method, { kind: SpanKind.SERVER }, parent);
    // Read from the request only when someone records them (tracing off: a no-op span).
    if (span.isRecording()) {
      const userAgent = req.get('user-agent');
      span.setAttributes({
        'http.request.method': req.method,
        'url.path': req.path,
        'url.scheme': req.protocol,
        'network.protocol.version': req.httpVersion,
        ...(userAgent ? { 'user_agent.original': userAgent } : {}),
      });
    }
    const ctx = trace.setSpan(parent, span);
    (res.locals as { traceContext?: Context }).traceContext = ctx;

    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      const route = routeTemplate(req);
      const status = res.statusCode;
      if (span.isRecording()) {
        if (route) {
          span.updateName(`${req.method} ${route}`);
          span.setAttribute('http.route', route);
        }
        span.setAttribute('http.response.status_code', status);
        if (!res.writableFinished) span.setAttribute('error.type', 'connection_closed');
        if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      }
      span.end();
      metrics.recordRequest(route ?? 'unmatched', req.method, status, (performance.now() - started) / 1000);
    };
    res.once('finish', end);
    res.once('close', end);
    context.with(ctx, next);
  };
}
