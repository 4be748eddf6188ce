import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { deflateSync, gzipSync } from 'node:zlib';
import { within } from '@pushline/testkit';
import { offlineKeys, offlinePartitions } from '@pushline/offline-store';
import { PROBLEM_TYPE_BASE, Problem } from '../src/index.ts';
import { call, startApi, type ApiHarness, type CallResult } from './harness.ts';

/** JSON text of a value nested `depth` arrays deep, built as text (no recursion anywhere). */
const nested = (depth: number, inner = '1') => `${'['.repeat(depth)}${inner}${']'.repeat(depth)}`;

function assertProblem(res: CallResult, status: number, code: string): Problem {
  assert.equal(res.status, status, JSON.stringify(res.body).slice(0, 500));
  assert.match(res.contentType, /^application\/problem\+json/);
  const problem = Problem.parse(res.body);
  assert.equal(problem.type, `${PROBLEM_TYPE_BASE}${code}`);
  return problem;
}

describe('push-api: limits on what it is sent', () => {
  let h: ApiHarness;
  before(async () => {
    h = await startApi({ label: 'limits', env: { PUSHLINE_MAX_JSON_DEPTH: '16' } });
  });
  after(() => h.close());

  /** Every route with a body, and the body around a payload given as JSON text. */
  const bodyRoutes: readonly [string, (payload: string) => string][] = [
    ['/v1/devices/deep-dev/messages', (p) => `{"payload":${p}}`],
    ['/v1/users/deep-user/messages', (p) => `{"payload":${p}}`],
    ['/v1/topics/deep-topic/messages', (p) => `{"payload":${p}}`],
    ['/v1/publish', (p) => `{"target":{"type":"device","id":"d"},"payload":${p}}`],
    ['/v1/publish', (p) => `{"messages":[{"target":{"type":"device","id":"d"},"payload":${p}}]}`],
  ];

  const post = (path: string, rawBody: string) =>
    call(h.url, 'POST', path, {
      key: h.keys.admin,
      rawBody,
      headers: { 'content-type': 'application/json' },
    });

  it('refuses payloads nested 2,000 and 100,000 deep with 400 json-too-deep on every route', async () => {
    for (const [path, body] of bodyRoutes) {
      for (const depth of [2_000, 100_000]) {
        const problem = assertProblem(await post(path, body(nested(depth))), 400, 'json-too-deep');
        assert.match(problem.detail ?? '', /deep/, `${path} at depth ${depth}`);
      }
    }
  });

  it('takes a payload at the configured depth and refuses one level more, naming the field', async () => {
    const atLimit = await post('/v1/publish', bodyRoutes[4]?.[1](nested(16)) ?? '');
    assert.equal(atLimit.status, 202, JSON.stringify(atLimit.body));
    const problem = assertProblem(
      await post('/v1/publish', bodyRoutes[3]?.[1](nested(17)) ?? ''),
      400,
      'json-too-deep',
    );
    assert.deepEqual(
      problem.errors?.map((e) => [e.in, e.field]),
      [['body', 'payload']],
    );
    // Deep elsewhere in the body, not in a payload: refused before any walk all the same.
    assertProblem(
      await post('/v1/devices/deep-dev/messages', `{"payload":1,"x":${nested(5_000)}}`),
      400,
      'json-too-deep',
    );
  });

  it('answers 400 problem+json for a path that is not valid percent-encoding, on every id route', async () => {
    const routes: [string, string][] = [
      ['GET', '/v1/devices/%/presence'],
      ['GET', '/v1/devices/%ZZ/presence'],
      ['POST', '/v1/devices/%ZZ/messages'],
      ['POST', '/v1/devices/%E0%A4%A/messages'],
      ['POST', '/v1/users/%/messages'],
      ['GET', '/v1/users/%C0/devices'],
      ['POST', '/v1/topics/%/messages'],
    ];
    for (const [method, path] of routes) {
      const res = await call(h.url, method, path, {
        key: h.keys.admin,
        ...(method === 'POST' ? { body: { payload: 1 } } : {}),
      });
      const problem = assertProblem(res, 400, 'validation-error');
      assert.match(problem.detail ?? '', /percent-encoding/, `${method} ${path}`);
    }
  });

  it('answers 400 problem+json for a body that is not what its content-encoding says, on every route', async () => {
    const body = '{"target":{"type":"device","id":"d"},"payload":1}';
    for (const [path] of bodyRoutes) {
      for (const encoding of ['gzip', 'deflate']) {
        const res = await call(h.url, 'POST', path, {
          key: h.keys.admin,
          rawBody: body,
          headers: { 'content-type': 'application/json', 'content-encoding': encoding },
        });
        const problem = assertProblem(res, 400, 'validation-error');
        assert.deepEqual(
          problem.errors?.map((e) => [e.in, e.field]),
          [['header', 'content-encoding']],
          `${encoding} ${path}`,
        );
      }
    }
    // A body that is what it says is read.
    for (const [encoding, encode] of [
      ['gzip', gzipSync],
      ['deflate', deflateSync],
    ] as const) {
      const res = await fetch(`${h.url}/v1/publish`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${h.keys.admin}`,
          'content-type': 'application/json',
          'content-encoding': encoding,
        },
        body: encode(body),
      });
      assert.equal(res.status, 202, `${encoding}: ${await res.text()}`);
    }
  });

  /**
   * One POST over a raw socket that declares `declaredBytes` and writes `body` before reading
   * anything, as a client that sends first and reads later does; resolves once the API has
   * answered and closed the connection.
   */
  async function rawPost(
    path: string,
    declaredBytes: number,
    body: string | Buffer,
    deadlineMs: number,
  ): Promise<{ head: string; text: string; writeError: Error | undefined }> {
    const { port } = new URL(h.url);
    const socket = connect(Number(port), '127.0.0.1');
    let answer = '';
    let writeError: Error | undefined;
    socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk));
    socket.on('error', (err) => (writeError = err));
    const closed = once(socket, 'close');
    try {
      await once(socket, 'connect');
      socket.write(
        [
          `POST ${path} HTTP/1.1`,
          'host: 127.0.0.1',
          `authorization: Bearer ${h.keys.admin}`,
          'content-type: application/json',
          `content-length: ${declaredBytes}`,
          '',
          '',
        ].join('\r\n'),
      );
      socket.write(body);
      await within(closed, deadlineMs, `the answer to ${path} and the connection closed`);
      const [head = '', text = ''] = answer.split('\r\n\r\n');
      return { head, text, writeError };
    } finally {
      // A failure must not leave the API a connection to wait for at close.
      socket.destroy();
    }
  }

  it('answers 413 to a body declared over the limit without waiting for it, and closes the connection', async () => {
    for (const [path] of bodyRoutes) {
      // 8 MB declared, 10 bytes sent, and the socket kept open: the client would send the rest.
      const { head, text } = await rawPost(path, 8 * 1024 * 1024, '{"payload"', 5_000);
      assert.match(head, /^HTTP\/1\.1 413 /, path);
      assert.match(head, /\r\nconnection: close\r\n/i, path);
      assert.match(head, /\r\ncontent-type: application\/problem\+json/i, path);
      assert.equal(Problem.parse(JSON.parse(text)).type, `${PROBLEM_TYPE_BASE}body-too-large`, path);
    }
  });

  it('answers 413 to a client that writes the whole oversized body before reading, instead of a closed socket', async () => {
    const body = Buffer.alloc(8 * 1024 * 1024, 0x20);
    for (const [path] of bodyRoutes) {
      // A server that closed right after its answer made these writes fail (EPIPE / ECONNRESET),
      // and the answer was lost with them.
      const { head, text, writeError } = await rawPost(path, body.length, body, 10_000);
      assert.equal(writeError, undefined, `${path}: ${writeError?.message}`);
      assert.match(head, /^HTTP\/1\.1 413 /, path);
      assert.equal(Problem.parse(JSON.parse(text)).type, `${PROBLEM_TYPE_BASE}body-too-large`, path);
    }
  });

  it('answers 405 with Allow on every known path for every other method', async () => {
    const known: [string, string][] = [
      ['/healthz', 'GET'],
      ['/v1/openapi.json', 'GET'],
      ['/v1/publish', 'POST'],
      ['/v1/devices/d1/messages', 'POST'],
      ['/v1/users/u1/messages', 'POST'],
      ['/v1/topics/t1/messages', 'POST'],
      ['/v1/devices/d1/presence', 'GET'],
      ['/v1/users/u1/devices', 'GET'],
    ];
    for (const [path, allowed] of known) {
      for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']) {
        if (method === allowed) continue;
        const res = await call(h.url, method, path, { key: h.keys.admin });
        assertProblem(res, 405, 'method-not-allowed');
        assert.equal(res.headers.get('allow'), allowed, `${method} ${path}`);
      }
    }
  });
});

describe('push-api: the per-key quota of stored messages', () => {
  let h: ApiHarness;
  before(async () => {
    h = await startApi({ label: 'quota', env: { PUSHLINE_OFFLINE_QUOTA_MESSAGES: '2' } });
  });
  after(() => h.close());

  const pushTo = (key: string, deviceId: string) =>
    call(h.url, 'POST', `/v1/devices/${deviceId}/messages`, {
      key,
      body: { payload: { to: deviceId }, ttlSeconds: 3600 },
    });

  it('stores for made-up devices up to the quota, then answers 507 quota-exceeded; other keys go on', async () => {
    for (const device of ['made-up-1', 'made-up-2']) {
      const res = await pushTo(h.keys.push, device);
      assert.equal(res.status, 202, JSON.stringify(res.body));
    }
    const refused = assertProblem(await pushTo(h.keys.push, 'made-up-3'), 507, 'quota-exceeded');
    assert.match(refused.detail ?? '', /quota/);
    assert.equal(
      await h.redis.exists(
        offlineKeys(h.keyPrefix, offlinePartitions(h.redis, undefined)).queue('made-up-3'),
      ),
      0,
      'nothing stored',
    );
    // Another API key has its own quota, and the same message id stays its own.
    assert.equal((await pushTo(h.keys.admin, 'made-up-3')).status, 202);

    // A user push reports the refusal per device instead of hiding the others' outcomes.
    await h.registry.register(
      {
        deviceId: 'quota-phone',
        userId: 'quota-user',
        serverId: 'gone',
        serverUrl: 'http://127.0.0.1:1',
        connectionId: 'c-1',
        connectedAt: Date.now(),
        lastSeen: Date.now(),
      },
      60,
    );
    const user = await call(h.url, 'POST', '/v1/users/quota-user/messages', {
      key: h.keys.push,
      body: { payload: 1, ttlSeconds: 60 },
    });
    assert.equal(user.status, 200, JSON.stringify(user.body));
    assert.deepEqual(
      (user.body as { results: { outcome: string; reason?: string }[] }).results.map((r) => [
        r.outcome,
        r.reason,
      ]),
      [['not_connected', 'quota_exceeded']],
    );
  });
});
