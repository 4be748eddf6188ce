import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import express, { type ErrorRequestHandler, type Request } from 'express';
import { z } from 'zod';
import { createLogger } from '@pushline/telemetry';
import { ApiKeyStore, authenticate, principalOf } from '../src/auth.ts';
import { KeyRateLimiter, rateLimit } from '../src/rate-limit.ts';
import { ProblemError, sendProblem } from '../src/problem.ts';
import { RouteTable } from '../src/routing.ts';

const PUSH_KEY = 'push-key-0123456789';
const PRESENCE_KEY = 'presence-key-0123456789';

/** Log lines the route table writes, parsed. */
const logged: { msg: string; operationId?: string; status?: number }[] = [];
const logger = createLogger({
  service: 'route-table-test',
  destination: new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n').filter(Boolean))
        logged.push(JSON.parse(line) as { msg: string });
      done();
    },
  }),
});

/** The limiter's clock: the tests move it, so no test waits for a bucket to refill. */
let nowMs = 0;
const seen: { operation: string; params: unknown; body: unknown; caller: string }[] = [];

function buildApp(): { app: express.Express; routes: RouteTable } {
  const app = express();
  const routes = new RouteTable(
    app,
    {
      authenticate: authenticate(
        new ApiKeyStore([
          { key: PUSH_KEY, scopes: ['push'] },
          { key: PRESENCE_KEY, scopes: ['presence'] },
        ]),
      ),
      rateLimit: rateLimit(new KeyRateLimiter({ ratePerSecond: 1, burst: 3 }, () => nowMs)),
      parseJson: express.json({ limit: 10_000 }),
      maxPayloadDepth: 4,
    },
    logger,
  );
  routes.add(
    {
      method: 'get',
      path: '/v1/public/:name',
      operationId: 'getPublic',
      summary: 'public',
      tag: 'test',
      scope: null,
      params: z.object({ name: z.string().regex(/^[a-z]+$/) }),
      body: undefined,
      responses: { 200: { description: 'ok', schema: z.object({ hello: z.string() }) } },
    },
    ({ params }) => {
      seen.push({ operation: 'getPublic', params, body: undefined, caller: 'anonymous' });
      return Promise.resolve({ status: 200, body: { hello: params.name } });
    },
  );
  routes.add(
    {
      method: 'post',
      path: '/v1/devices/:deviceId/messages',
      operationId: 'pushToDevice',
      summary: 'push',
      tag: 'test',
      scope: 'push',
      params: z.object({ deviceId: z.string().min(2) }),
      body: z.object({ payload: z.unknown(), count: z.number().int().optional() }),
      headers: [{ name: 'x-trace-me', schema: z.enum(['yes', 'no']).optional() }],
      responses: {
        200: {
          description: 'delivered',
          schema: z.object({ outcome: z.literal('delivered') }),
          headers: { 'x-answered-by': 'the handler' },
        },
        202: { description: 'accepted', schema: z.object({ accepted: z.boolean() }) },
      },
    },
    ({ params, body, res }) => {
      seen.push({ operation: 'pushToDevice', params, body, caller: principalOf(res).id });
      if (body.count === 1) return Promise.resolve({ status: 201, body: {} });
      if (body.count === 2) return Promise.resolve({ status: 202, body: { accepted: 'not a boolean' } });
      if (body.count === 3) return Promise.reject(new ProblemError('service-unavailable', 'down'));
      return Promise.resolve({
        status: 200,
        body: { outcome: 'delivered' },
        headers: { 'x-answered-by': 'the handler' },
      });
    },
  );
  routes.add(
    {
      method: 'get',
      path: '/v1/devices/:deviceId/messages',
      operationId: 'listMessages',
      summary: 'list',
      tag: 'test',
      scope: 'presence',
      params: z.object({ deviceId: z.string() }),
      body: undefined,
      responses: { 200: { description: 'ok', schema: z.object({ messages: z.array(z.unknown()) }) } },
    },
    () => Promise.resolve({ status: 200, body: { messages: [] } }),
  );
  app.use((req: Request) => {
    const allowed = routes.methodsFor(req.path);
    if (allowed.length > 0) throw new ProblemError('method-not-allowed', 'no', { allow: allowed });
    throw new ProblemError('not-found', `No route ${req.method} ${req.path}.`);
  });
  const onError: ErrorRequestHandler = (err: unknown, req, res, _next) => {
    if (err instanceof ProblemError) {
      if (err.allow) res.setHeader('allow', err.allow.join(', '));
      sendProblem(req, res, err);
    } else {
      res.status(500).json({ error: err instanceof Error ? err.message : String(err) });
    }
  };
  app.use(onError);
  return { app, routes };
}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Record<string, unknown>;
}

describe('RouteTable', () => {
  let server: Server;
  let base: string;
  let routes: RouteTable;

  before(async () => {
    const built = buildApp();
    routes = built.routes;
    server = built.app.listen(0, '127.0.0.1');
    await new Promise<void>((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  async function call(
    method: string,
    path: string,
    options: { key?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
  ): Promise<Answer> {
    const headers: Record<string, string> = { ...options.headers };
    if (options.key) headers.authorization = `Bearer ${options.key}`;
    let body: string | undefined = options.rawBody;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] ??= 'application/json';
    }
    const res = await fetch(`${base}${path}`, { method, headers, ...(body === undefined ? {} : { body }) });
    const text = await res.text();
    return {
      status: res.status,
      headers: res.headers,
      body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
    };
  }

  it('remembers every operation it registered, in order, for the OpenAPI document', () => {
    assert.deepEqual(
      routes.specs.map((s) => `${s.method} ${s.path} ${s.operationId}`),
      [
        'get /v1/public/:name getPublic',
        'post /v1/devices/:deviceId/messages pushToDevice',
        'get /v1/devices/:deviceId/messages listMessages',
      ],
    );
  });

  it('lists the methods registered for a concrete path, for a 405', () => {
    assert.deepEqual(routes.methodsFor('/v1/devices/dev-1/messages'), ['POST', 'GET']);
    assert.deepEqual(routes.methodsFor('/v1/devices/dev-1/messages/'), ['POST', 'GET']);
    assert.deepEqual(routes.methodsFor('/v1/public/x'), ['GET']);
    assert.deepEqual(routes.methodsFor('/v1/devices/dev-1'), []);
    assert.deepEqual(routes.methodsFor('/v1/devices/a/b/messages'), [], 'a parameter is one segment');
    assert.deepEqual(routes.methodsFor('/v1/public'), []);
  });

  it('serves a public operation without a key, with its validated params', async () => {
    const answer = await call('GET', '/v1/public/world');
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { hello: 'world' });
    assert.match(answer.headers.get('content-type') ?? '', /^application\/json/);
  });

  it('answers 400 validation-error naming the path parameter that failed', async () => {
    const answer = await call('GET', '/v1/public/WORLD');
    assert.equal(answer.status, 400);
    assert.match(String(answer.body.type), /validation-error$/);
    const errors = answer.body.errors as { field: string; in: string }[];
    assert.deepEqual(
      errors.map((e) => [e.field, e.in]),
      [['name', 'path']],
    );
  });

  it('answers 401 to a protected operation without a key or with an unknown one', async () => {
    nowMs += 10_000;
    assert.equal((await call('POST', '/v1/devices/dev-1/messages', { body: { payload: 1 } })).status, 401);
    const wrong = await call('POST', '/v1/devices/dev-1/messages', {
      key: 'nope-nope-nope-nope',
      body: { payload: 1 },
    });
    assert.equal(wrong.status, 401);
  });

  it('answers 403 to a key without the scope the operation needs', async () => {
    nowMs += 10_000;
    const answer = await call('POST', '/v1/devices/dev-1/messages', {
      key: PRESENCE_KEY,
      body: { payload: 1 },
    });
    assert.equal(answer.status, 403);
    assert.match(String(answer.body.detail), /`push` scope/);
    assert.equal((await call('GET', '/v1/devices/dev-1/messages', { key: PRESENCE_KEY })).status, 200);
  });

  it('hands the handler its params, its body and the caller, and sends its declared headers', async () => {
    nowMs += 10_000;
    seen.length = 0;
    const answer = await call('POST', '/v1/devices/dev-1/messages', {
      key: PUSH_KEY,
      body: { payload: { a: [1, 2] } },
    });
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { outcome: 'delivered' });
    assert.equal(answer.headers.get('x-answered-by'), 'the handler');
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0]?.params, { deviceId: 'dev-1' });
    assert.deepEqual(seen[0]?.body, { payload: { a: [1, 2] } });
    assert.match(seen[0]?.caller ?? '', /^[0-9a-f]{12}$/);
  });

  const badBodies = [
    [
      'a body that fails its schema',
      { body: { payload: 1, count: 'two' } },
      400,
      'validation-error',
      'count',
    ],
    [
      'a body that is not JSON',
      { rawBody: 'hello', headers: { 'content-type': 'text/plain' } },
      415,
      'unsupported-media-type',
      undefined,
    ],
    [
      'a body nested past the depth limit (payload depth 4 + envelope 3)',
      { body: { payload: [[[[[[[1]]]]]]] } },
      400,
      'json-too-deep',
      undefined,
    ],
    [
      'a header outside its schema',
      { body: { payload: 1 }, headers: { 'x-trace-me': 'maybe' } },
      400,
      'validation-error',
      'x-trace-me',
    ],
  ] as const;
  for (const [label, options, status, problem, field] of badBodies) {
    it(`refuses ${label} with ${status} before the handler runs`, async () => {
      nowMs += 10_000;
      seen.length = 0;
      const answer = await call('POST', '/v1/devices/dev-1/messages', { key: PUSH_KEY, ...options });
      assert.equal(answer.status, status);
      assert.equal(answer.headers.get('content-type'), 'application/problem+json; charset=utf-8');
      if (problem) assert.match(String(answer.body.type), new RegExp(`${problem}$`));
      if (field) {
        const errors = answer.body.errors as { field: string }[];
        assert.ok(
          errors.some((e) => e.field === field),
          JSON.stringify(errors),
        );
      }
      assert.equal(seen.length, 0);
    });
  }

  it('refuses a path parameter that fails its schema on a protected route', async () => {
    nowMs += 10_000;
    const answer = await call('POST', '/v1/devices/d/messages', { key: PUSH_KEY, body: { payload: 1 } });
    assert.equal(answer.status, 400);
    assert.deepEqual(
      (answer.body.errors as { field: string }[]).map((e) => e.field),
      ['deviceId'],
    );
  });

  it('turns an answer with an undeclared status into an error, never into that status', async () => {
    nowMs += 10_000;
    const answer = await call('POST', '/v1/devices/dev-1/messages', {
      key: PUSH_KEY,
      body: { payload: 1, count: 1 },
    });
    assert.equal(answer.status, 500);
    assert.match(String(answer.body.error), /pushToDevice answered 201, which its spec does not declare/);
  });

  it('still sends an answer that breaks its documented schema, and logs the drift each time', async () => {
    logged.length = 0;
    for (let i = 0; i < 2; i++) {
      nowMs += 10_000;
      const answer = await call('POST', '/v1/devices/dev-1/messages', {
        key: PUSH_KEY,
        body: { payload: 1, count: 2 },
      });
      assert.equal(answer.status, 202);
      assert.deepEqual(answer.body, { accepted: 'not a boolean' });
    }
    await new Promise<void>((resolve) => setImmediate(resolve));
    const drifts = logged.filter((l) => l.msg === 'response does not match its documented schema');
    assert.equal(drifts.length, 2, 'a non-conforming kind is checked again: it never becomes conforming');
    assert.equal(drifts[0]?.operationId, 'pushToDevice');
    assert.equal(drifts[0]?.status, 202);
  });

  it('passes a handler problem through as problem+json', async () => {
    nowMs += 10_000;
    const answer = await call('POST', '/v1/devices/dev-1/messages', {
      key: PUSH_KEY,
      body: { payload: 1, count: 3 },
    });
    assert.equal(answer.status, 503);
    assert.equal(answer.body.detail, 'down');
    assert.equal(answer.body.instance, '/v1/devices/dev-1/messages');
  });

  it('rate-limits per key: 429 with Retry-After past the burst, other keys unaffected, refilled by the clock', async () => {
    nowMs += 10_000;
    const push = () => call('POST', '/v1/devices/dev-1/messages', { key: PUSH_KEY, body: { payload: 1 } });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await push()).status);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
    const limited = await push();
    assert.equal(limited.status, 429);
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.equal(limited.body.retryAfterSeconds, 1);
    assert.equal((await call('GET', '/v1/devices/dev-1/messages', { key: PRESENCE_KEY })).status, 200);
    assert.equal((await call('GET', '/v1/public/abc')).status, 200, 'public operations are not limited');
    nowMs += 1_000;
    assert.equal((await push()).status, 200);
    assert.equal((await push()).status, 429);
  });

  it('answers 405 with Allow for a known path and 404 for an unknown one', async () => {
    const wrongMethod = await call('DELETE', '/v1/devices/dev-1/messages');
    assert.equal(wrongMethod.status, 405);
    assert.equal(wrongMethod.headers.get('allow'), 'POST, GET');
    assert.equal((await call('GET', '/v1/nothing')).status, 404);
  });
});

describe('KeyRateLimiter', () => {
  it('gives each key its own bucket of `burst` tokens', () => {
    let now = 0;
    const limiter = new KeyRateLimiter({ ratePerSecond: 2, burst: 2 }, () => now);
    assert.deepEqual([limiter.take('a'), limiter.take('a')], [{ ok: true }, { ok: true }]);
    assert.deepEqual(limiter.take('a'), { ok: false, retryAfterSeconds: 1 });
    assert.deepEqual(limiter.take('b'), { ok: true });
    now = 500;
    assert.deepEqual(limiter.take('a'), { ok: true });
  });

  it('rounds the wait up to whole seconds, never below 1', () => {
    let now = 0;
    const limiter = new KeyRateLimiter({ ratePerSecond: 0.25, burst: 1 }, () => now);
    assert.deepEqual(limiter.take('k'), { ok: true });
    assert.deepEqual(limiter.take('k'), { ok: false, retryAfterSeconds: 4 });
    now = 3_999;
    assert.deepEqual(limiter.take('k'), { ok: false, retryAfterSeconds: 1 });
    now = 4_000;
    assert.deepEqual(limiter.take('k'), { ok: true });
  });

  it('starts a key first seen late with a full bucket', () => {
    let now = 0;
    const limiter = new KeyRateLimiter({ ratePerSecond: 1, burst: 3 }, () => now);
    limiter.take('early');
    now = 1_000_000;
    const taken = [limiter.take('late'), limiter.take('late'), limiter.take('late'), limiter.take('late')];
    assert.deepEqual(
      taken.map((t) => t.ok),
      [true, true, true, false],
    );
  });
});
