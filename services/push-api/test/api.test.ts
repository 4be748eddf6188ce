import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { findSamples, parsePrometheusText } from '@pushline/telemetry';
import { OPENAPI_PATH, PROBLEM_TYPE_BASE, Problem, openApiPath } from '../src/index.ts';
import { call, startApi, type ApiHarness } from './harness.ts';

function assertProblem(
  res: { status: number; contentType: string; body: unknown },
  status: number,
  code: string,
  instance: string,
): ReturnType<typeof Problem.parse> {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.match(res.contentType, /^application\/problem\+json/);
  const problem = Problem.parse(res.body);
  assert.equal(problem.type, `${PROBLEM_TYPE_BASE}${code}`);
  assert.equal(problem.status, status);
  assert.equal(problem.instance, instance);
  assert.ok(problem.title.length > 0);
  return problem;
}

describe('push-api: auth, errors, presence, ops', () => {
  let h: ApiHarness;
  before(async () => {
    h = await startApi({
      label: 'api',
      env: { PUSHLINE_MAX_PAYLOAD_BYTES: '64', PUSHLINE_API_BODY_LIMIT_BYTES: '2048' },
    });
  });
  after(() => h.close());

  describe('API keys', () => {
    const path = '/v1/devices/d1/presence';
    it('401 unauthorized without a key, with a wrong key, and with a malformed authorization header', async () => {
      assertProblem(await call(h.url, 'GET', path), 401, 'unauthorized', path);
      assertProblem(
        await call(h.url, 'GET', path, { key: `${h.keys.presence}x` }),
        401,
        'unauthorized',
        path,
      );
      assertProblem(
        await call(h.url, 'GET', path, { headers: { authorization: `Basic ${h.keys.presence}` } }),
        401,
        'unauthorized',
        path,
      );
    });

    it('403 forbidden when the key lacks the scope', async () => {
      const problem = assertProblem(
        await call(h.url, 'GET', path, { key: h.keys.push }),
        403,
        'forbidden',
        path,
      );
      assert.match(problem.detail ?? '', /presence/);
      assertProblem(
        await call(h.url, 'POST', '/v1/publish', {
          key: h.keys.pushPresence,
          body: { target: { type: 'device', id: 'd1' }, payload: 1 },
        }),
        403,
        'forbidden',
        '/v1/publish',
      );
    });

    it('accepts the key as a bearer token or in x-api-key; admin implies every scope', async () => {
      assert.equal((await call(h.url, 'GET', path, { key: h.keys.presence })).status, 200);
      assert.equal(
        (await call(h.url, 'GET', path, { headers: { 'x-api-key': h.keys.presence } })).status,
        200,
      );
      assert.equal((await call(h.url, 'GET', path, { key: h.keys.admin })).status, 200);
      assert.equal((await call(h.url, 'GET', path, { key: h.keys.pushPresence })).status, 200);
    });
  });

  describe('problem+json', () => {
    it('404 for an unknown route, 405 with Allow for a known path and wrong method', async () => {
      assertProblem(await call(h.url, 'GET', '/v1/nope'), 404, 'not-found', '/v1/nope');
      const res = await call(h.url, 'GET', '/v1/publish', { key: h.keys.admin });
      assertProblem(res, 405, 'method-not-allowed', '/v1/publish');
      assert.equal(res.headers.get('allow'), 'POST');
    });

    it('400 malformed-json for a body that does not parse', async () => {
      const path = '/v1/devices/d1/messages';
      assertProblem(
        await call(h.url, 'POST', path, {
          key: h.keys.push,
          rawBody: '{"payload":',
          headers: { 'content-type': 'application/json' },
        }),
        400,
        'malformed-json',
        path,
      );
    });

    it('415 for a body that is not JSON', async () => {
      const path = '/v1/devices/d1/messages';
      assertProblem(
        await call(h.url, 'POST', path, {
          key: h.keys.push,
          rawBody: 'payload=1',
          headers: { 'content-type': 'text/plain' },
        }),
        415,
        'unsupported-media-type',
        path,
      );
    });

    it('400 validation-error naming each bad field, in the body and in the path', async () => {
      const path = '/v1/devices/d1/messages';
      const res = await call(h.url, 'POST', path, {
        key: h.keys.push,
        body: { payload: 1, timeoutMs: -5, ttl: 3 },
      });
      const problem = assertProblem(res, 400, 'validation-error', path);
      const fields = (problem.errors ?? []).map((e) => `${e.in}:${e.field}`).sort();
      assert.deepEqual(fields, ['body:(root)', 'body:timeoutMs']);
      assert.match(JSON.stringify(problem.errors), /ttl/);

      const badPath = '/v1/devices/bad%20id/messages';
      const pathProblem = assertProblem(
        await call(h.url, 'POST', badPath, { key: h.keys.push, body: { payload: 1 } }),
        400,
        'validation-error',
        '/v1/devices/bad%20id/messages',
      );
      assert.deepEqual(
        pathProblem.errors?.map((e) => [e.in, e.field]),
        [['path', 'deviceId']],
      );

      const batch = await call(h.url, 'POST', '/v1/publish', {
        key: h.keys.publish,
        body: {
          messages: [
            { target: { type: 'device', id: 'ok' }, payload: 1 },
            { target: { type: 'fax', id: 'x' }, payload: 1 },
          ],
        },
      });
      const batchProblem = assertProblem(batch, 400, 'validation-error', '/v1/publish');
      assert.deepEqual(
        batchProblem.errors?.map((e) => e.field),
        ['messages[1].target.type'],
      );
    });

    it('413 payload-too-large past PUSHLINE_MAX_PAYLOAD_BYTES, body-too-large past the body limit', async () => {
      const path = '/v1/devices/d1/messages';
      const problem = assertProblem(
        await call(h.url, 'POST', path, { key: h.keys.push, body: { payload: 'x'.repeat(100) } }),
        413,
        'payload-too-large',
        path,
      );
      assert.deepEqual(
        problem.errors?.map((e) => e.field),
        ['payload'],
      );
      const batch = assertProblem(
        await call(h.url, 'POST', '/v1/publish', {
          key: h.keys.publish,
          body: {
            messages: [
              { target: { type: 'user', id: 'u' }, payload: 1 },
              { target: { type: 'user', id: 'u' }, payload: 'y'.repeat(80) },
            ],
          },
        }),
        413,
        'payload-too-large',
        '/v1/publish',
      );
      assert.deepEqual(
        batch.errors?.map((e) => e.field),
        ['messages[1].payload'],
      );
      assertProblem(
        await call(h.url, 'POST', path, { key: h.keys.push, body: { payload: 'z'.repeat(4000) } }),
        413,
        'body-too-large',
        path,
      );
    });
  });

  describe('presence', () => {
    it('reports a registered device with its server and times, and a user’s devices', async () => {
      const now = Date.now();
      const base = {
        userId: 'u-pres',
        serverId: 'srv-1',
        serverUrl: 'http://127.0.0.1:1',
        connectedAt: now,
        lastSeen: now,
      };
      await h.registry.register({ ...base, deviceId: 'pres-a', connectionId: 'c1' }, 60);
      await h.registry.register({ ...base, deviceId: 'pres-b', connectionId: 'c2' }, 60);

      const online = await call(h.url, 'GET', '/v1/devices/pres-a/presence', { key: h.keys.presence });
      assert.equal(online.status, 200);
      assert.deepEqual(online.body, {
        deviceId: 'pres-a',
        online: true,
        userId: 'u-pres',
        serverId: 'srv-1',
        connectedAt: now,
        lastSeen: now,
      });
      const offline = await call(h.url, 'GET', '/v1/devices/pres-z/presence', { key: h.keys.presence });
      assert.deepEqual(offline.body, { deviceId: 'pres-z', online: false });

      const devices = await call(h.url, 'GET', '/v1/users/u-pres/devices', { key: h.keys.presence });
      assert.equal(devices.status, 200);
      const body = devices.body as { userId: string; devices: { deviceId: string; serverId: string }[] };
      assert.equal(body.userId, 'u-pres');
      assert.deepEqual(body.devices.map((d) => d.deviceId).sort(), ['pres-a', 'pres-b']);
      assert.ok(body.devices.every((d) => d.serverId === 'srv-1'));
    });
  });

  describe('ops endpoints', () => {
    it('serve /readyz and /metrics on the ops port only; the public port has /healthz alone', async () => {
      assert.deepEqual((await call(h.url, 'GET', '/healthz')).body, { status: 'ok' });
      for (const path of ['/readyz', '/metrics']) {
        const pub = await call(h.url, 'GET', path);
        assert.equal(pub.status, 404, `public ${path}`);
        assert.match(pub.contentType, /^application\/problem\+json/);
      }
      assert.deepEqual((await call(h.opsUrl, 'GET', '/healthz')).body, { status: 'ok' });
      const ready = await call(h.opsUrl, 'GET', '/readyz');
      assert.equal(ready.status, 200);
      const body = ready.body as {
        status: string;
        draining: boolean;
        checks: { kafka: { ok: boolean }; redis: { ok: boolean } };
      };
      assert.equal(body.status, 'ready');
      assert.equal(body.draining, false);
      assert.equal(body.checks.kafka.ok, true);
      assert.equal(body.checks.redis.ok, true);
      assert.equal((await call(h.opsUrl, 'GET', '/metrics')).status, 200);
    });

    it('/metrics counts requests by route template, never by concrete path', async () => {
      await call(h.url, 'GET', '/v1/devices/metric-dev/presence', { key: h.keys.presence });
      const res = await call(h.opsUrl, 'GET', '/metrics');
      assert.equal(res.status, 200);
      const families = parsePrometheusText(String(res.body));
      const samples = findSamples(families, 'pushline_api_requests_total', {
        route: '/v1/devices/:deviceId/presence',
        method: 'GET',
        status: '200',
      });
      assert.ok(samples.length === 1 && (samples[0]?.value ?? 0) >= 1);
      assert.ok(!String(res.body).includes('metric-dev'));
      assert.ok(
        findSamples(families, 'pushline_api_request_seconds_count', { route: 'unmatched' }).length > 0,
      );
    });
  });
});

describe('push-api: OpenAPI document', () => {
  let h: ApiHarness;
  before(async () => {
    h = await startApi({ label: 'openapi' });
  });
  after(() => h.close());

  /** Every (METHOD, path) express has a route for, read from the app's router. */
  function expressRoutes(): Set<string> {
    const router = (
      h.api.app as unknown as {
        router: { stack: { route?: { path: string; methods: Record<string, boolean> } }[] };
      }
    ).router;
    const out = new Set<string>();
    for (const layer of router.stack) {
      if (!layer.route) continue;
      for (const [method, on] of Object.entries(layer.route.methods)) {
        if (on && method !== '_all') out.add(`${method.toUpperCase()} ${layer.route.path}`);
      }
    }
    return out;
  }

  it('is served without a key and lists exactly the routes express serves (ops routes aside)', async () => {
    const res = await call(h.url, 'GET', OPENAPI_PATH);
    assert.equal(res.status, 200);
    const doc = res.body as { openapi: string; paths: Record<string, Record<string, unknown>> };
    assert.equal(doc.openapi, '3.1.0');

    const documented = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of Object.keys(item)) documented.add(`${method.toUpperCase()} ${path}`);
    }
    const served = new Set(
      [...expressRoutes()]
        .filter((r) => !/ \/(healthz|readyz|metrics)$/.test(r))
        .map((r) => {
          const [method, path] = r.split(' ') as [string, string];
          return `${method} ${openApiPath(path)}`;
        }),
    );
    assert.ok(served.size >= 7, `expected the /v1 routes, got ${[...served].join(', ')}`);
    assert.deepEqual([...served].sort(), [...documented].sort());
  });

  it('documents each operation’s statuses, path parameters and component schemas', async () => {
    const doc = (await call(h.url, 'GET', OPENAPI_PATH)).body as {
      paths: Record<
        string,
        Record<
          string,
          {
            parameters: { name: string; in: string }[];
            responses: Record<string, { content: Record<string, { schema: { $ref?: string } }> }>;
          }
        >
      >;
      components: { schemas: Record<string, unknown> };
    };
    const direct = doc.paths['/v1/devices/{deviceId}/messages']?.['post'];
    assert.ok(direct);
    for (const status of ['200', '202', '404', '422', '504', '400', '401', '403', '413', '429']) {
      assert.ok(direct.responses[status], `pushToDevice documents ${status}`);
    }
    assert.deepEqual(
      direct.parameters.map((p) => `${p.in}:${p.name}`),
      ['path:deviceId'],
    );
    assert.equal(
      direct.responses['404']?.content['application/json']?.schema.$ref,
      '#/components/schemas/DirectPushResult',
    );
    assert.equal(
      direct.responses['401']?.content['application/problem+json']?.schema.$ref,
      '#/components/schemas/Problem',
    );
    const publish = doc.paths['/v1/publish']?.['post'];
    assert.ok(publish?.parameters.some((p) => p.in === 'header' && p.name === 'Idempotency-Key'));
    assert.ok(publish?.responses['409'] && publish.responses['422'] && publish.responses['202']);

    // Every $ref resolves.
    const refs = JSON.stringify(doc).match(/"#\/components\/schemas\/[^"]+"/g) ?? [];
    for (const ref of new Set(refs)) {
      const name = ref.slice('"#/components/schemas/'.length, -1);
      assert.ok(name in doc.components.schemas, `unresolved ${ref}`);
    }
  });
});

describe('push-api: rate limit', () => {
  let h: ApiHarness | undefined;
  afterEach(() => h?.close());

  it('429 rate-limited with Retry-After once a key’s bucket is empty; other keys are unaffected', async () => {
    h = await startApi({
      label: 'ratelimit',
      env: { PUSHLINE_API_RATE_PER_S: '1', PUSHLINE_API_BURST: '3' },
    });
    const path = '/v1/devices/rl/presence';
    for (let i = 0; i < 3; i++)
      assert.equal((await call(h.url, 'GET', path, { key: h.keys.presence })).status, 200);
    const limited = await call(h.url, 'GET', path, { key: h.keys.presence });
    const problem = assertProblem(limited, 429, 'rate-limited', path);
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.equal(problem.retryAfterSeconds, 1);
    assert.equal((await call(h.url, 'GET', path, { key: h.keys.admin })).status, 200);
  });
});
