import express, {
  type ErrorRequestHandler,
  type Express,
  type Request,
  type RequestHandler,
  type Response,
} from 'express';
import { ApiKeyStore, authenticate } from './auth.ts';
import type { ApiContext } from './context.ts';
import { requestTelemetry } from './http-telemetry.ts';
import { declaredStatuses, registerOpenApiRoute } from './openapi.ts';
import { ProblemError, sendProblem } from './problem.ts';
import { KeyRateLimiter, rateLimit } from './rate-limit.ts';
import { PUBLIC_HEALTH_PATH, registerPublicHealthRoute } from './routes/health.ts';
import { registerPresenceRoutes } from './routes/presence.ts';
import { registerPublishRoutes } from './routes/publish.ts';
import { registerPushRoutes } from './routes/push.ts';
import { RouteTable } from './routing.ts';

const API_VERSION = '1.0.0';

export interface AppOptions {
  readonly ctx: ApiContext;
}

/** Paths served outside the route table, and their methods (for 405 answers). */
const OTHER_PATHS: Readonly<Record<string, readonly string[]>> = { [PUBLIC_HEALTH_PATH]: ['GET'] };

/**
 * The express app: telemetry for every request, liveness, the /v1 operations (authenticated,
 * rate-limited, scoped, then JSON-parsed, so an anonymous caller costs no body parsing), and
 * problem+json for everything that goes wrong. Readiness and metrics are on the ops port.
 */
export function createApp(options: AppOptions): { app: Express; routes: RouteTable } {
  const { ctx } = options;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestTelemetry(ctx.tracer, ctx.metrics));
  registerPublicHealthRoute(app);

  const keys = new ApiKeyStore(ctx.config.PUSHLINE_API_KEYS);
  const limiter = new KeyRateLimiter({
    ratePerSecond: ctx.config.PUSHLINE_API_RATE_PER_S,
    burst: ctx.config.PUSHLINE_API_BURST,
  });
  const routes = new RouteTable(
    app,
    {
      authenticate: authenticate(keys),
      rateLimit: rateLimit(limiter, () => ctx.metrics.rateLimited.inc()),
      parseJson: jsonBody(ctx.config.PUSHLINE_API_BODY_LIMIT_BYTES),
      maxPayloadDepth: ctx.config.PUSHLINE_MAX_JSON_DEPTH,
    },
    ctx.logger,
  );
  registerPushRoutes(routes, ctx);
  registerPublishRoutes(routes, ctx);
  registerPresenceRoutes(routes, ctx);
  registerOpenApiRoute(routes, ctx.schemas, {
    title: 'Pushline push API',
    version: API_VERSION,
    description:
      'Direct push with synchronous delivery feedback, asynchronous publish through Kafka, and presence. Errors are RFC 9457 problem+json.',
  });

  ctx.metrics.initOperations(
    routes.specs.map((spec) => ({
      route: spec.path,
      method: spec.method.toUpperCase(),
      statuses: declaredStatuses(spec),
    })),
  );

  app.use((req: Request) => {
    const allowed = [...routes.methodsFor(req.path), ...(OTHER_PATHS[req.path] ?? [])];
    if (allowed.length > 0) {
      throw new ProblemError(
        'method-not-allowed',
        `${req.method} is not allowed here; use ${allowed.join(', ')}.`,
        {
          allow: allowed,
        },
      );
    }
    throw new ProblemError('not-found', `No route ${req.method} ${req.path}.`);
  });
  app.use(errorHandler(ctx));
  return { app, routes };
}

/**
 * How long a body declared over the limit is read and dropped before its 413 is sent and the
 * connection closed. A client that writes the whole body before reading (most HTTP clients) would
 * otherwise hit a closed socket mid-write and never see the answer (EPIPE); a client that declares
 * megabytes and sends a few bytes holds the connection no longer than this.
 */
const OVERSIZED_BODY_LINGER_MS = 1_000;

/**
 * express.json behind a check of the declared length: body-parser answers an over-long body only
 * after reading (and dropping) all of it, so a client that declares 8 MB and sends 10 bytes would
 * wait forever. A declared length over the limit is refused without parsing: the body is dropped
 * until it ends or for OVERSIZED_BODY_LINGER_MS, whichever comes first, then 413 is sent and the
 * connection closed. Only for an identity body: the limit applies to the decoded bytes, which a
 * compressed body's length does not tell.
 */
function jsonBody(limitBytes: number): RequestHandler {
  const parse = express.json({ limit: limitBytes, strict: true });
  return (req, res, next) => {
    const encoding = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
    const declared = Number(req.headers['content-length']);
    if (encoding === 'identity' && Number.isFinite(declared) && declared > limitBytes) {
      res.setHeader('connection', 'close');
      let answered = false;
      const answer = () => {
        if (answered) return;
        answered = true;
        clearTimeout(linger);
        next(
          new ProblemError(
            'body-too-large',
            `The body is declared as ${declared} bytes; the limit is ${limitBytes}.`,
          ),
        );
      };
      const linger = setTimeout(answer, OVERSIZED_BODY_LINGER_MS);
      req.once('end', answer).once('error', answer).resume();
      return;
    }
    parse(req, res, next);
  };
}

/** A client error that body-parser (or its zlib stream) raised: an http-errors 4xx. */
function clientErrorStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const { status, expose } = err as { status?: unknown; expose?: unknown };
  return typeof status === 'number' && status >= 400 && status < 500 && expose === true ? status : undefined;
}

/**
 * body-parser errors carry a `type`, and the ones without one but with a 4xx status (a body that
 * does not decode under its content-encoding) are client errors too; everything else that is not
 * a ProblemError is a 500.
 */
function toProblem(err: unknown): ProblemError {
  if (err instanceof ProblemError) return err;
  // The router decodes path parameters before any handler runs: `%`, `%ZZ`, a cut UTF-8 sequence.
  if (err instanceof URIError) {
    return new ProblemError('validation-error', 'A path segment is not valid percent-encoding.', {
      errors: [{ field: '(path)', in: 'path', message: 'must be valid percent-encoded UTF-8' }],
      cause: err,
    });
  }
  const type = (err as { type?: unknown } | null)?.type;
  if (type === 'entity.parse.failed') {
    return new ProblemError('malformed-json', 'The body is not valid JSON (or not an object/array).', {
      cause: err,
    });
  }
  if (type === 'entity.too.large') {
    const limit = (err as { limit?: unknown }).limit;
    return new ProblemError('body-too-large', `The body exceeds ${String(limit)} bytes.`, { cause: err });
  }
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') {
    return new ProblemError('unsupported-media-type', 'Send the body as UTF-8 JSON.', { cause: err });
  }
  if (type === 'request.aborted' || type === 'stream.not.readable') {
    return new ProblemError('validation-error', 'The request body could not be read.', { cause: err });
  }
  const status = clientErrorStatus(err);
  if (status === 413) return new ProblemError('body-too-large', undefined, { cause: err });
  if (status === 415)
    return new ProblemError('unsupported-media-type', 'Send the body as UTF-8 JSON.', { cause: err });
  if (status !== undefined) {
    // zlib's errors (Z_DATA_ERROR...): the bytes are not what the content-encoding header says.
    const zlib = String((err as { code?: unknown }).code ?? '').startsWith('Z_');
    return new ProblemError(
      'validation-error',
      zlib ? 'The body does not decode under its content-encoding.' : 'The request body could not be read.',
      {
        ...(zlib
          ? {
              errors: [
                { field: 'content-encoding', in: 'header' as const, message: 'does not match the body' },
              ],
            }
          : {}),
        cause: err,
      },
    );
  }
  return new ProblemError('internal-error', 'The request failed; it has been logged.', { cause: err });
}

function errorHandler(ctx: ApiContext): ErrorRequestHandler {
  return (err: unknown, req, res: Response, _next) => {
    const problem = toProblem(err);
    if (problem.code === 'internal-error') {
      ctx.logger.error({ err, method: req.method, path: req.path }, 'request failed');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (problem.allow) res.setHeader('allow', problem.allow.join(', '));
    sendProblem(req, res, problem);
  };
}
