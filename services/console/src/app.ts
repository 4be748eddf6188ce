import { randomBytes } from 'node:crypto';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import type { ConsoleConfig } from '@pushline/config';
import { PROBLEM_CONTENT_TYPE, problemTypeUri, type Problem } from '@pushline/protocol';
import type { DeviceRegistry } from '@pushline/registry';
import type { Logger } from '@pushline/telemetry';
import { ReplayError, type KafkaFeeds } from './feeds.ts';
import type { OverviewCollector } from './overview.ts';
import type { ConsoleSessions } from './sessions.ts';
import type { Asset } from './ui-assets.ts';

const SESSION_COOKIE = 'pushline_console';
/** Sent by the console's own script on every state-changing call: a cross-site form cannot set it. */
const CSRF_HEADER = 'x-pushline-console';

export interface ConsoleAppOptions {
  readonly config: ConsoleConfig;
  readonly sessions: ConsoleSessions;
  readonly overview: OverviewCollector;
  readonly feeds: KafkaFeeds;
  readonly registry: DeviceRegistry;
  readonly assets: ReadonlyMap<string, Asset>;
  readonly ready: () => boolean;
  readonly logger: Logger;
}

class ConsoleProblemError extends Error {
  override readonly name = 'ConsoleProblemError';
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, detail: string) {
    super(detail);
    this.status = status;
    this.code = code;
  }
}

const CONSOLE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
// The demo device connects to the connection servers, on other origins, over WebSocket.
const DEMO_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss: http: https:; frame-ancestors 'none'; base-uri 'none'";

function cookieOf(req: Request, name: string): string | undefined {
  for (const part of (req.get('cookie') ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return undefined;
}

/**
 * The console's HTTP surface. Pages and scripts carry no secret and are served to anyone; every
 * /console/api call needs a signed-in session (or an admin key as a bearer token, for scripts).
 */
export function createConsoleApp(o: ConsoleAppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use((_req, res, next) => {
    res.setHeader('x-content-type-options', 'nosniff');
    res.setHeader('referrer-policy', 'no-referrer');
    next();
  });

  app.get('/healthz', (_req, res) => void res.json({ status: 'ok' }));
  app.get('/readyz', (_req, res) => {
    const ready = o.ready();
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'not_ready' });
  });

  const page = (name: string, csp: string) => (_req: Request, res: Response) => {
    const asset = o.assets.get(name);
    if (!asset) throw new ConsoleProblemError(404, 'not-found', `no asset ${name}`);
    res.setHeader('content-security-policy', csp);
    res.setHeader('cache-control', 'no-store');
    res.type(asset.contentType).send(asset.body);
  };
  app.get('/', (_req, res) => res.redirect(302, '/console'));
  app.get('/console', page('console.html', CONSOLE_CSP));
  app.get('/demo', page('demo.html', DEMO_CSP));
  app.get('/assets/:name', (req, res) => {
    const asset = o.assets.get(String(req.params['name']));
    if (!asset || asset.contentType.startsWith('text/html'))
      throw new ConsoleProblemError(404, 'not-found', 'no such asset');
    res.setHeader('cache-control', 'no-cache');
    res.type(asset.contentType).send(asset.body);
  });
  // Public: the URLs devices connect to are no secret, and the demo page needs them.
  app.get('/demo/config', async (_req, res) => {
    res.json({ deviceUrls: await o.overview.deviceUrls() });
  });

  const api = express.Router();
  api.use(express.json({ limit: '256kb' }));

  api.post('/session', (req, res) => {
    const key: unknown = (req.body as { key?: unknown } | undefined)?.key;
    if (typeof key !== 'string' || key.length === 0 || key.length > 512) {
      throw new ConsoleProblemError(400, 'validation-error', 'send { "key": "<admin API key>" }');
    }
    const result = o.sessions.signIn(key);
    if ('refused' in result) {
      throw result.refused === 'not_admin'
        ? new ConsoleProblemError(403, 'forbidden', 'the console needs a key with the admin scope')
        : new ConsoleProblemError(401, 'unauthorized', 'the API key is not valid');
    }
    res.cookie(SESSION_COOKIE, result.id, {
      httpOnly: true,
      sameSite: 'strict',
      path: '/console',
      maxAge: o.sessions.ttlSeconds * 1000,
      secure: req.secure,
    });
    res.status(204).end();
  });

  // Everything below needs a session or an admin bearer key.
  api.use((req: Request, res: Response, next: NextFunction) => {
    const session = cookieOf(req, SESSION_COOKIE);
    const fromSession = o.sessions.keyOf(session);
    if (fromSession) {
      if (req.method !== 'GET' && req.get(CSRF_HEADER) !== '1') {
        throw new ConsoleProblemError(
          403,
          'forbidden',
          `state-changing calls need the ${CSRF_HEADER} header`,
        );
      }
      res.locals['apiKey'] = fromSession;
      res.locals['session'] = session;
      return next();
    }
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.get('authorization') ?? '')?.[1];
    if (!bearer) throw new ConsoleProblemError(401, 'unauthorized', 'sign in with an admin API key');
    const refused = o.sessions.check(bearer);
    if (refused === 'unknown_key')
      throw new ConsoleProblemError(401, 'unauthorized', 'the API key is not valid');
    if (refused === 'not_admin')
      throw new ConsoleProblemError(403, 'forbidden', 'the console needs the admin scope');
    res.locals['apiKey'] = bearer;
    next();
  });

  api.delete('/session', (_req, res) => {
    o.sessions.signOut(res.locals['session'] as string | undefined);
    res.clearCookie(SESSION_COOKIE, { path: '/console' });
    res.status(204).end();
  });

  api.get('/overview', async (_req, res) => {
    const overview = await o.overview.get();
    res.json({
      ...overview,
      deliveryEvents: o.feeds.deliveryEvents(),
      deadLetters: o.feeds.deadLetters(),
      jaeger: o.config.PUSHLINE_CONSOLE_JAEGER_URL !== undefined,
    });
  });

  api.get('/devices/:deviceId', async (req, res) => {
    const deviceId = String(req.params['deviceId']);
    if (!/^[A-Za-z0-9._:@-]{1,128}$/.test(deviceId))
      throw new ConsoleProblemError(400, 'validation-error', 'not a device id');
    const record = await o.registry.lookup(deviceId);
    res.json(
      record
        ? {
            deviceId,
            online: true,
            userId: record.userId,
            serverId: record.serverId,
            connectedAt: record.connectedAt,
            lastSeen: record.lastSeen,
          }
        : { deviceId, online: false },
    );
  });

  api.post('/push', async (req, res) => {
    res.json(await testPush(o, req.body, res.locals['apiKey'] as string));
  });

  api.post('/dlq/replay', async (req, res) => {
    const body = req.body as { ref?: unknown; value?: unknown } | undefined;
    if (typeof body?.ref !== 'string' || typeof body.value !== 'string') {
      throw new ConsoleProblemError(
        400,
        'validation-error',
        'send { "ref": "<partition:offset>", "value": "<edited JSON>" }',
      );
    }
    try {
      res.json(await o.feeds.replay(body.ref, body.value));
    } catch (err) {
      if (err instanceof ReplayError)
        throw new ConsoleProblemError(
          err.status,
          err.status === 404 ? 'not-found' : 'validation-error',
          err.message,
        );
      throw err;
    }
  });

  app.use('/console/api', api);
  app.use((req: Request) => {
    throw new ConsoleProblemError(404, 'not-found', `no route ${req.method} ${req.path}`);
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const type = (err as { type?: unknown } | null)?.type;
    const problem =
      err instanceof ConsoleProblemError
        ? err
        : type === 'entity.parse.failed'
          ? new ConsoleProblemError(400, 'malformed-json', 'the body is not valid JSON')
          : type === 'entity.too.large'
            ? new ConsoleProblemError(413, 'body-too-large', 'the body is too large')
            : new ConsoleProblemError(500, 'internal-error', 'the request failed; it has been logged');
    if (problem.status >= 500)
      o.logger.error({ err, method: req.method, path: req.path }, 'console request failed');
    if (res.headersSent) return void res.destroy();
    const body: Problem = {
      type: problemTypeUri(problem.code),
      title: problem.code,
      status: problem.status,
      detail: problem.message,
      instance: req.path,
    };
    res.status(problem.status).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(body));
  });
  return app;
}

interface TestPushResult {
  readonly status: number;
  readonly body: unknown;
  /** Round trip of the API call, measured by the console. */
  readonly roundTripMs: number;
  readonly traceId: string;
  readonly traceUrl?: string;
}

/**
 * A test direct push or publish through the push-api, with the operator's own key (the console
 * holds none of its own) and a fresh trace, so the operator can follow it in Jaeger.
 */
async function testPush(o: ConsoleAppOptions, raw: unknown, apiKey: string): Promise<TestPushResult> {
  const body = (raw ?? {}) as {
    mode?: unknown;
    deviceId?: unknown;
    target?: unknown;
    payload?: unknown;
    timeoutMs?: unknown;
    ttlSeconds?: unknown;
  };
  let path: string;
  let request: Record<string, unknown>;
  if (body.mode === 'direct' && typeof body.deviceId === 'string') {
    path = `/v1/devices/${encodeURIComponent(body.deviceId)}/messages`;
    request = {
      payload: body.payload,
      ...(typeof body.timeoutMs === 'number' ? { timeoutMs: body.timeoutMs } : {}),
    };
  } else if (body.mode === 'publish' && typeof body.target === 'object' && body.target !== null) {
    path = '/v1/publish';
    request = {
      target: body.target,
      payload: body.payload,
      ...(typeof body.ttlSeconds === 'number' ? { ttlSeconds: body.ttlSeconds } : {}),
    };
  } else {
    throw new ConsoleProblemError(
      400,
      'validation-error',
      'send { mode: "direct", deviceId, payload } or { mode: "publish", target, payload }',
    );
  }
  const traceId = randomBytes(16).toString('hex');
  const started = performance.now();
  let res: globalThis.Response;
  try {
    res = await fetch(`${o.config.PUSHLINE_CONSOLE_API_URL.replace(/\/+$/, '')}${path}`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${apiKey}`,
        'content-type': 'application/json',
        traceparent: `00-${traceId}-${randomBytes(8).toString('hex')}-01`,
      },
      body: JSON.stringify(request),
      signal: AbortSignal.timeout(35_000),
    });
  } catch (err) {
    o.logger.warn({ err }, 'test push: push-api unreachable');
    throw new ConsoleProblemError(502, 'bad-gateway', 'the push-api did not answer');
  }
  const text = await res.text();
  let answer: unknown = text;
  try {
    answer = JSON.parse(text);
  } catch {
    // Shown as text.
  }
  const jaeger = o.config.PUSHLINE_CONSOLE_JAEGER_URL;
  return {
    status: res.status,
    body: answer,
    roundTripMs: Math.round((performance.now() - started) * 10) / 10,
    traceId,
    ...(jaeger ? { traceUrl: `${jaeger.replace(/\/+$/, '')}/trace/${traceId}` } : {}),
  };
}
