import assert from 'node:assert/strict';
import { request } from 'node:http';
import { describe, it } from 'node:test';
import { OpsServer, readBody, sendJson, BodyTooLargeError, type OpsServerOptions } from '@pushline/runtime';
import { Counter, createMetricsRegistry } from '@pushline/telemetry';

interface Answer {
  readonly status: number;
  readonly contentType: string | undefined;
  readonly text: string;
}

/** One HTTP request over a fresh connection (no keep-alive, so `close()` has nothing to wait for). */
function call(url: string, method = 'GET', body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          contentType: res.headers['content-type'],
          text: Buffer.concat(chunks).toString('utf8'),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function withServer(
  options: Partial<OpsServerOptions>,
  run: (server: OpsServer) => Promise<void>,
): Promise<void> {
  const server = new OpsServer({
    host: '127.0.0.1',
    port: 0,
    metrics: createMetricsRegistry({ service: 'ops-test' }, false),
    ready: () => Promise.resolve({ ok: true }),
    ...options,
  });
  await server.start();
  try {
    await run(server);
  } finally {
    await server.close();
  }
}

describe('OpsServer', () => {
  it('has no url before it starts', () => {
    const server = new OpsServer({
      host: '127.0.0.1',
      port: 0,
      metrics: createMetricsRegistry({ service: 'ops-test' }, false),
      ready: () => Promise.resolve({ ok: true }),
    });
    assert.throws(() => server.url, /not started/);
  });

  it('listens on a free port and reports a loopback url', async () => {
    await withServer({}, async (server) => {
      assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
      assert.ok(server.server.listening);
      const port = Number(new URL(server.url).port);
      assert.ok(port > 0);
    });
  });

  it('brackets an IPv6 address in its url', async () => {
    await withServer({ host: '::1' }, async (server) => {
      assert.match(server.url, /^http:\/\/\[::1\]:\d+$/);
      const answer = await call(`${server.url}/healthz`);
      assert.equal(answer.status, 200);
    });
  });

  it('answers /healthz with ok, whatever readiness says', async () => {
    await withServer({ ready: () => Promise.resolve({ ok: false }) }, async (server) => {
      const answer = await call(`${server.url}/healthz`);
      assert.equal(answer.status, 200);
      assert.equal(answer.contentType, 'application/json');
      assert.deepEqual(JSON.parse(answer.text), { status: 'ok' });
    });
  });

  const readiness = [
    { ok: true, detail: undefined, status: 200, body: { status: 'ready' } },
    { ok: false, detail: undefined, status: 503, body: { status: 'not_ready' } },
    {
      ok: false,
      detail: { redis: 'down', kafka: 'up' },
      status: 503,
      body: { status: 'not_ready', redis: 'down', kafka: 'up' },
    },
    { ok: true, detail: { joined: true }, status: 200, body: { status: 'ready', joined: true } },
  ] as const;
  for (const row of readiness) {
    it(`answers /readyz ${row.status} for ok=${row.ok} with detail ${JSON.stringify(row.detail)}`, async () => {
      await withServer(
        { ready: () => Promise.resolve(row.detail ? { ok: row.ok, detail: row.detail } : { ok: row.ok }) },
        async (server) => {
          const answer = await call(`${server.url}/readyz`);
          assert.equal(answer.status, row.status);
          assert.deepEqual(JSON.parse(answer.text), row.body);
        },
      );
    });
  }

  it('asks the readiness check on every /readyz, so the answer follows it', async () => {
    let ok = false;
    let asked = 0;
    await withServer(
      {
        ready: () => {
          asked++;
          return Promise.resolve({ ok });
        },
      },
      async (server) => {
        assert.equal((await call(`${server.url}/readyz`)).status, 503);
        ok = true;
        assert.equal((await call(`${server.url}/readyz`)).status, 200);
        assert.equal(asked, 2);
      },
    );
  });

  it('answers 500 with the error when the readiness check throws, and keeps serving', async () => {
    await withServer({ ready: () => Promise.reject(new Error('probe exploded')) }, async (server) => {
      const answer = await call(`${server.url}/readyz`);
      assert.equal(answer.status, 500);
      assert.match((JSON.parse(answer.text) as { error: string }).error, /probe exploded/);
      assert.equal((await call(`${server.url}/healthz`)).status, 200);
    });
  });

  it('serves the registry on /metrics in its content type', async () => {
    const metrics = createMetricsRegistry({ service: 'ops-test' }, false);
    const counter = new Counter({ name: 'ops_test_things_total', help: 'things', registers: [metrics] });
    counter.inc(3);
    await withServer({ metrics }, async (server) => {
      const answer = await call(`${server.url}/metrics`);
      assert.equal(answer.status, 200);
      assert.equal(answer.contentType, metrics.contentType);
      assert.match(answer.text, /^ops_test_things_total\{service="ops-test"\} 3$/m);
    });
  });

  it('ignores the query string when matching a route', async () => {
    await withServer({}, async (server) => {
      assert.equal((await call(`${server.url}/healthz?verbose=1`)).status, 200);
      assert.equal((await call(`${server.url}/readyz?x=y`)).status, 200);
    });
  });

  it('answers 404 for unknown paths and for the ops paths with another method', async () => {
    await withServer({}, async (server) => {
      for (const [method, path] of [
        ['GET', '/'],
        ['GET', '/nope'],
        ['POST', '/healthz'],
        ['DELETE', '/readyz'],
        ['PUT', '/metrics'],
        ['GET', '/healthz/'],
      ] as const) {
        const answer = await call(`${server.url}${path}`, method);
        assert.equal(answer.status, 404, `${method} ${path}`);
        assert.deepEqual(JSON.parse(answer.text), { error: 'not_found' });
      }
    });
  });

  it('hands other requests to the extra routes, and falls through to 404 when they decline', async () => {
    const seen: string[] = [];
    await withServer(
      {
        routes: async (req, res) => {
          seen.push(`${req.method} ${req.url}`);
          if (req.url !== '/internal/echo') return false;
          const body = await readBody(req, 1024);
          sendJson(res, 201, { echoed: body.toString('utf8') });
          return true;
        },
      },
      async (server) => {
        const echoed = await call(`${server.url}/internal/echo`, 'POST', 'hello');
        assert.equal(echoed.status, 201);
        assert.deepEqual(JSON.parse(echoed.text), { echoed: 'hello' });
        assert.equal((await call(`${server.url}/internal/other`)).status, 404);
        // The ops routes come first: the extra routes never see them.
        assert.equal((await call(`${server.url}/healthz`)).status, 200);
        assert.deepEqual(seen, ['POST /internal/echo', 'GET /internal/other']);
      },
    );
  });

  it('answers 500 when an extra route throws before answering', async () => {
    await withServer({ routes: () => Promise.reject(new Error('route broke')) }, async (server) => {
      const answer = await call(`${server.url}/anything`);
      assert.equal(answer.status, 500);
      assert.match(answer.text, /route broke/);
    });
  });

  it('refuses to start on a port already taken', async () => {
    await withServer({}, async (first) => {
      const port = Number(new URL(first.url).port);
      const second = new OpsServer({
        host: '127.0.0.1',
        port,
        metrics: createMetricsRegistry({ service: 'ops-test' }, false),
        ready: () => Promise.resolve({ ok: true }),
      });
      await assert.rejects(second.start(), { code: 'EADDRINUSE' });
      await second.close();
    });
  });

  it('closes idempotently, and a closed server takes no more requests', async () => {
    const server = new OpsServer({
      host: '127.0.0.1',
      port: 0,
      metrics: createMetricsRegistry({ service: 'ops-test' }, false),
      ready: () => Promise.resolve({ ok: true }),
    });
    await server.start();
    const url = server.url;
    assert.equal((await call(`${url}/healthz`)).status, 200);
    await Promise.all([server.close(), server.close()]);
    await server.close();
    assert.equal(server.server.listening, false);
    await assert.rejects(call(`${url}/healthz`), { code: 'ECONNREFUSED' });
  });

  it('closes without having started', async () => {
    const server = new OpsServer({
      host: '127.0.0.1',
      port: 0,
      metrics: createMetricsRegistry({ service: 'ops-test' }, false),
      ready: () => Promise.resolve({ ok: true }),
    });
    await server.close();
    assert.equal(server.server.listening, false);
  });
});

describe('readBody', () => {
  it('reads a body up to the limit, and refuses one past it with BodyTooLargeError', async () => {
    const outcomes: unknown[] = [];
    await withServer(
      {
        routes: async (req, res) => {
          try {
            const body = await readBody(req, 8);
            outcomes.push(body.toString('utf8'));
            sendJson(res, 200, { length: body.length });
          } catch (err) {
            outcomes.push(err);
            sendJson(res, 413, { error: 'too_large' });
          }
          return true;
        },
      },
      async (server) => {
        assert.equal((await call(`${server.url}/body`, 'POST', '12345678')).status, 200);
        assert.equal((await call(`${server.url}/body`, 'POST', '')).status, 200);
        assert.equal((await call(`${server.url}/body`, 'POST', '123456789')).status, 413);
      },
    );
    assert.equal(outcomes[0], '12345678');
    assert.equal(outcomes[1], '');
    assert.ok(outcomes[2] instanceof BodyTooLargeError);
    assert.equal(outcomes[2].limit, 8);
    assert.match(outcomes[2].message, /exceeds 8 bytes/);
  });
});
