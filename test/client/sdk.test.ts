import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { SignJWT } from 'jose';
import {
  PushlineAuthError,
  PushlineClient,
  PushlineTopicError,
  type DisconnectInfo,
  type PushlineClientOptions,
  type PushlineMessage,
  type TokenRequest,
} from '@pushline/client';
import { createSpanRecorder, startTracing } from '@pushline/telemetry';
import { waitUntil, within } from '@pushline/testkit';
import { childServers, type ChildServer, type ChildServers } from '../support/child-servers.ts';
import { startPlatform, type Platform } from '../support/platform.ts';

/**
 * The SDK against the real platform: connection servers as child processes (so they can be
 * killed -9 or drained with SIGTERM), the push-api in process, real Kafka and Redis.
 */

let platform: Platform;
let children: ChildServers;
let cs1: ChildServer;
let cs2: ChildServer;
const clients: PushlineClient[] = [];
// The in-process push-api traces each push, so the device sees a traceparent to continue.
const tracing = startTracing({
  serviceName: 'sdk-test',
  instanceId: 'sdk-test',
  spanProcessors: [createSpanRecorder().spanProcessor],
});

before(async () => {
  platform = await startPlatform('sdk', { servers: 0, processor: false });
  children = childServers(platform);
  // Low topic limit, so `too_many_subscriptions` is reachable.
  [cs1, cs2] = await Promise.all([
    children.start('cs1', { PUSHLINE_MAX_TOPICS_PER_DEVICE: '3' }),
    children.start('cs2', { PUSHLINE_MAX_TOPICS_PER_DEVICE: '3' }),
  ]);
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

after(async () => {
  await children?.close();
  await platform?.close();
  await tracing.close();
});

/** A live server for tests that need two, replacing any that an earlier test killed or drained. */
async function ensureServers(): Promise<void> {
  if (cs1.process.exitInfo())
    cs1 = await children.start(`cs1-${Date.now()}`, { PUSHLINE_MAX_TOPICS_PER_DEVICE: '3' });
  if (cs2.process.exitInfo())
    cs2 = await children.start(`cs2-${Date.now()}`, { PUSHLINE_MAX_TOPICS_PER_DEVICE: '3' });
}

function mint(
  deviceId: string,
  userId: string,
  opts: { expSeconds?: number; secret?: string; topics?: string[] } = {},
) {
  return new SignJWT({ uid: userId, ...(opts.topics ? { topics: opts.topics } : {}) })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(deviceId)
    .setExpirationTime(Math.floor(Date.now() / 1000) + (opts.expSeconds ?? 600))
    .sign(new TextEncoder().encode(opts.secret ?? platform.jwtSecret));
}

function client(
  deviceId: string,
  userId: string,
  options: Partial<PushlineClientOptions> & { handler?: (m: PushlineMessage) => void | Promise<void> } = {},
): PushlineClient & { received: PushlineMessage[]; tokenRequests: TokenRequest[] } {
  const tokenRequests: TokenRequest[] = [];
  const c = new PushlineClient({
    url: [cs1.deviceUrl, cs2.deviceUrl],
    token: (req) => {
      tokenRequests.push(req);
      return mint(deviceId, userId);
    },
    reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
    ...options,
  });
  clients.push(c);
  const received: PushlineMessage[] = [];
  c.onMessage(async (m) => {
    received.push(m);
    await options.handler?.(m);
  });
  return Object.assign(c, { received, tokenRequests });
}

async function connected(c: PushlineClient, deviceId: string, server?: ChildServer): Promise<void> {
  await within(c.whenConnected(), 15_000, `${deviceId} connected`);
  await waitUntil(
    async () => {
      const rec = await platform.registry.lookup(deviceId);
      return rec && (!server || rec.serverId === server.serverId);
    },
    { what: `${deviceId} registered${server ? ` on ${server.serverId}` : ''}` },
  );
}

const push = (deviceId: string, body: Record<string, unknown>) =>
  platform.call('POST', `/v1/devices/${deviceId}/messages`, body) as Promise<{
    status: number;
    body: { outcome: string; reason?: string; duplicate?: boolean };
  }>;

const nextEvent = <T>(c: PushlineClient, event: 'disconnected' | 'connected' | 'closed', ms = 15_000) =>
  within(new Promise<T>((resolve) => c.once(event, (v) => resolve(v as T))), ms, event);

test('connects, hands a direct push to the handler with its trace context, acks it: delivered', async () => {
  const c = client('sdk-d1', 'sdk-u1');
  const states: string[] = [];
  c.on('state', ({ state }) => states.push(state));
  c.connect();
  await connected(c, 'sdk-d1');
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.deepEqual(c.tokenRequests, [{ reason: 'connect' }]);

  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const res = await fetch(`${platform.api.url}/v1/devices/sdk-d1/messages`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${platform.apiKey}`,
      'content-type': 'application/json',
      traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
    },
    body: JSON.stringify({ id: 'sdk-m1', payload: { hello: 'world' } }),
  });
  assert.equal(res.status, 200);
  assert.equal(((await res.json()) as { outcome: string }).outcome, 'delivered');
  assert.equal(c.received.length, 1);
  const [m] = c.received;
  assert.equal(m?.id, 'sdk-m1');
  assert.deepEqual(m?.payload, { hello: 'world' });
  assert.equal(m?.trace?.traceId, traceId, 'the app sees the trace the push started');
  assert.match(m?.traceparent ?? '', new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
});

test('a handler that throws nacks with its message: the sender sees rejected with the reason', async () => {
  const c = client('sdk-d2', 'sdk-u1', {
    handler: () => {
      throw new Error('cannot show this');
    },
  });
  c.connect();
  await connected(c, 'sdk-d2');
  const res = await push('sdk-d2', { payload: 1 });
  assert.equal(res.body.outcome, 'rejected');
  assert.equal(res.body.reason, 'cannot show this');
});

test('a handler that throws synchronously nacks too, and the messages after it are still handled', async () => {
  const c = client('sdk-d2s', 'sdk-u1');
  let throwing = true;
  c.onMessage(() => {
    if (throwing) throw new Error('not now');
  });
  c.connect();
  await connected(c, 'sdk-d2s');
  const refused = await push('sdk-d2s', { payload: 1 });
  assert.equal(refused.body.outcome, 'rejected');
  assert.equal(refused.body.reason, 'not now');
  throwing = false;
  assert.equal((await push('sdk-d2s', { payload: 2 })).body.outcome, 'delivered');
  assert.deepEqual(
    c.received.map((m) => m.payload),
    [1, 2],
  );
});

test('kill -9 of its server: reconnects to the other, restores subscriptions, drops a redelivered id', async () => {
  await ensureServers();
  const c = client('sdk-d3', 'sdk-u3', { url: [cs1.deviceUrl, cs2.deviceUrl] });
  c.connect();
  await connected(c, 'sdk-d3', cs1);
  await c.subscribe('user:sdk-u3');
  assert.equal((await push('sdk-d3', { id: 'sdk-dup-1', payload: 'first' })).body.outcome, 'delivered');

  const dropped = nextEvent<DisconnectInfo>(c, 'disconnected');
  cs1.kill();
  const info = await dropped;
  assert.equal(info.willReconnect, true);
  assert.equal(info.hint, undefined);
  await connected(c, 'sdk-d3', cs2);

  // The topic came back with the connection: a broadcast reaches the device.
  await waitUntil(
    async () => {
      const res = await platform.call('POST', '/v1/topics/user:sdk-u3/messages', { payload: 'news' });
      return (res.body as { delivered: number }).delivered === 1;
    },
    { what: 'broadcast to the restored topic delivered' },
  );
  assert.ok(c.received.some((m) => m.topic === 'user:sdk-u3' && m.payload === 'news'));

  // The same id again on the new connection: the server cannot know, the SDK does.
  const duplicates: string[] = [];
  c.on('duplicate', ({ id }) => duplicates.push(id));
  const again = await push('sdk-d3', { id: 'sdk-dup-1', payload: 'first' });
  assert.equal(again.body.outcome, 'delivered');
  assert.equal(again.body.duplicate, undefined, 'the new connection had not seen the id');
  assert.deepEqual(duplicates, ['sdk-dup-1']);
  assert.equal(c.received.filter((m) => m.id === 'sdk-dup-1').length, 1, 'the app saw the message once');
});

test('a drain: waits out the server hint, moves to another server, and keeps delivering', async () => {
  await ensureServers();
  const c = client('sdk-d4', 'sdk-u4', { url: [cs2.deviceUrl, cs1.deviceUrl] });
  c.connect();
  await connected(c, 'sdk-d4', cs2);
  const dropped = nextEvent<DisconnectInfo>(c, 'disconnected');
  const draining = cs2.drain();
  const info = await dropped;
  assert.equal(info.hint?.reason, 'server_shutdown');
  assert.ok(info.hint.afterMs <= 300, 'afterMs within the drain window');
  assert.equal(info.willReconnect, true);
  assert.ok((info.reconnectInMs ?? -1) <= info.hint.afterMs, 'the wait counts from the hint');
  await connected(c, 'sdk-d4', cs1);
  await draining;
  assert.equal((await push('sdk-d4', { payload: 'after drain' })).body.outcome, 'delivered');
  assert.equal(c.state, 'connected');
});

test('replaced: the older client stops for good and never reconnects', async () => {
  await ensureServers();
  const older = client('sdk-d5', 'sdk-u5');
  older.connect();
  await connected(older, 'sdk-d5');
  const closed = nextEvent<{ reason: string; error?: Error }>(older, 'closed');
  const newer = client('sdk-d5', 'sdk-u5', { url: [cs2.deviceUrl] });
  newer.connect();
  await within(newer.whenConnected(), 15_000, 'newer connected');
  const info = await closed;
  assert.equal(info.reason, 'replaced');
  assert.equal(older.state, 'closed');
  await waitUntil(
    async () => (await push('sdk-d5', { id: 'sdk-r1', payload: 1 })).body.outcome === 'delivered',
    {
      what: 'push reaches the newer client',
    },
  );
  assert.ok(newer.received.some((m) => m.id === 'sdk-r1'));
  assert.equal(older.received.length, 0);
  assert.equal(older.state, 'closed', 'no reconnect after replaced');
});

test('token provider: called at connect, ahead of exp, and with the code after an auth error', async () => {
  await ensureServers();
  const requests: TokenRequest[] = [];
  let calls = 0;
  const c = new PushlineClient({
    url: cs1.deviceUrl,
    tokenRefreshMarginMs: 60_000,
    token: (req) => {
      requests.push(req);
      calls++;
      // 1st: already expired (refused); 2nd: valid but short-lived (renewed at half its life); 3rd: long.
      if (calls === 1) return mint('sdk-d6', 'sdk-u6', { expSeconds: -60 });
      if (calls === 2) return mint('sdk-d6', 'sdk-u6', { expSeconds: 12 });
      return mint('sdk-d6', 'sdk-u6');
    },
  });
  clients.push(c);
  const errors: string[] = [];
  c.on('error', (e) => errors.push(e.code));
  c.connect();
  await connected(c, 'sdk-d6');
  assert.deepEqual(requests.slice(0, 2), [
    { reason: 'connect' },
    { reason: 'auth_error', code: 'token_expired' },
  ]);
  assert.deepEqual(errors, ['token_expired']);
  await waitUntil(() => requests.length >= 3, {
    timeoutMs: 10_000,
    what: 'the short token renewed ahead of exp',
  });
  // The client renews ahead of exp by itself; a server whose refresh lead covers the token's whole
  // life asks first (token_expiring). Either way the connection is kept.
  assert.ok(
    requests[2]?.reason === 'expiring' || requests[2]?.reason === 'token_expiring',
    `third token request: ${JSON.stringify(requests[2])}`,
  );
  assert.equal(c.state, 'connected', 'renewing the token does not drop the connection');
});

test('token_expiring: the client answers with a fresh token and the connection outlives the old exp', async () => {
  await ensureServers();
  const requests: TokenRequest[] = [];
  // 6 s of validity is inside the server's refresh lead (60 s), so it asks for a fresh token at once.
  const firstExp = Math.floor(Date.now() / 1000) + 6;
  const c = new PushlineClient({
    url: cs1.deviceUrl,
    tokenRefreshMarginMs: 0,
    token: (req) => {
      requests.push(req);
      return requests.length === 1
        ? new SignJWT({ uid: 'sdk-u11' })
            .setProtectedHeader({ alg: 'HS256' })
            .setSubject('sdk-d11')
            .setExpirationTime(firstExp)
            .sign(new TextEncoder().encode(platform.jwtSecret))
        : mint('sdk-d11', 'sdk-u11');
    },
  });
  clients.push(c);
  const errors: string[] = [];
  const disconnects: DisconnectInfo[] = [];
  c.on('error', (e) => errors.push(e.code));
  c.on('disconnected', (info) => disconnects.push(info));
  const received: PushlineMessage[] = [];
  c.onMessage((m) => void received.push(m));
  c.connect();
  await connected(c, 'sdk-d11');
  await waitUntil(() => requests.some((r) => r.reason === 'token_expiring'), {
    what: 'the provider asked for a token because of token_expiring',
  });
  // Past the old token's exp and the server's clock tolerance (5 s), the connection must still be up.
  await waitUntil(() => Date.now() > (firstExp + 6) * 1000, {
    timeoutMs: 20_000,
    what: 'the old exp passed',
  });
  const answer = await push('sdk-d11', { payload: { after: 'exp' } });
  assert.equal(answer.body.outcome, 'delivered');
  assert.deepEqual(disconnects, [], 'the connection was never dropped');
  assert.deepEqual(errors, []);
  assert.equal(received.length, 1);
});

test('an unrecoverable auth error stops the client with a typed error', async () => {
  await ensureServers();
  let calls = 0;
  const c = new PushlineClient({
    url: cs1.deviceUrl,
    token: () => {
      calls++;
      return mint('sdk-d7', 'sdk-u7', { secret: 'a-secret-the-server-does-not-know-0123456789' });
    },
  });
  clients.push(c);
  c.connect();
  const info = await nextEvent<{ reason: string; error?: Error }>(c, 'closed');
  assert.equal(info.reason, 'auth_failed');
  assert.ok(info.error instanceof PushlineAuthError);
  assert.equal(info.error.code, 'token_invalid_signature');
  assert.equal(calls, 2, 'one fresh token was tried before giving up');
  assert.equal(c.state, 'closed');
  await assert.rejects(c.whenConnected(), { code: 'closed' });
});

test('offline replay arrives in order, handled one at a time', async () => {
  await ensureServers();
  for (const n of [1, 2, 3]) {
    const res = await push('sdk-d8', { id: `sdk-o${n}`, payload: n, ttlSeconds: 60 });
    assert.equal(res.body.outcome, 'stored');
  }
  let running = 0;
  let overlapped = false;
  const c = client('sdk-d8', 'sdk-u8', {
    handler: async () => {
      running++;
      if (running > 1) overlapped = true;
      // Let the event loop run, so a concurrent second handler would show.
      await new Promise((resolve) => setImmediate(resolve));
      running--;
    },
  });
  c.connect();
  await waitUntil(() => c.received.length >= 3, { what: 'the stored messages' });
  assert.deepEqual(
    c.received.map((m) => m.id),
    ['sdk-o1', 'sdk-o2', 'sdk-o3'],
  );
  assert.equal(overlapped, false);
});

test('topics: typed errors for forbidden and too many; a subscribe made offline resolves on connect', async () => {
  await ensureServers();
  // Topics beyond the device's own `user:<uid>` come from the token's `topics` claim.
  const c = client('sdk-d9', 'sdk-u9', { token: () => mint('sdk-d9', 'sdk-u9', { topics: ['sdk9.*'] }) });
  const early = c.subscribe('sdk9.a');
  c.connect();
  await within(early, 15_000, 'offline subscribe restored on connect');
  await assert.rejects(c.subscribe('user:someone-else.a'), (err: unknown) => {
    assert.ok(err instanceof PushlineTopicError);
    assert.equal(err.code, 'forbidden');
    assert.equal(err.topic, 'user:someone-else.a');
    return true;
  });
  await c.subscribe('sdk9.b');
  await c.subscribe('sdk9.c');
  await assert.rejects(c.subscribe('sdk9.d'), { code: 'too_many_subscriptions' });
  assert.deepEqual([...c.topics].sort(), ['sdk9.a', 'sdk9.b', 'sdk9.c']);
  await c.unsubscribe('sdk9.c');
  await c.subscribe('sdk9.d');
});

test('device-to-device: delivered, rejected, timeout, not_connected and rate_limited', async () => {
  await ensureServers();
  let mode: 'ack' | 'throw' | 'hang' = 'ack';
  const b = client('sdk-db', 'sdk-u10', {
    url: [cs2.deviceUrl],
    handlerTimeoutMs: 1_000,
    handler: async () => {
      if (mode === 'throw') throw new Error('busy');
      if (mode === 'hang') await new Promise(() => {});
    },
  });
  const a = client('sdk-da', 'sdk-u10', { url: [cs1.deviceUrl] });
  a.connect();
  b.connect();
  await connected(a, 'sdk-da', cs1);
  await connected(b, 'sdk-db', cs2);

  const delivered = await a.send('sdk-db', { hi: 1 });
  assert.equal(delivered.outcome, 'delivered');
  assert.equal(typeof delivered.latencyMs, 'number');
  assert.deepEqual(b.received.at(-1)?.from, 'sdk-da');

  mode = 'throw';
  assert.equal((await a.send('sdk-db', { hi: 2 })).outcome, 'rejected');
  mode = 'hang';
  assert.equal((await a.send('sdk-db', { hi: 3 }, { timeoutMs: 300 })).outcome, 'timeout');
  mode = 'ack';
  assert.equal((await a.send('sdk-nobody', { hi: 4 })).outcome, 'not_connected');

  // Burst 20 at 10/s: 30 sends at once cannot all pass.
  const results = await Promise.all(Array.from({ length: 30 }, (_, i) => a.send('sdk-db', { burst: i })));
  const outcomes = new Set(results.map((r) => r.outcome));
  assert.ok(outcomes.has('rate_limited'), `some rate_limited in ${[...outcomes].join(',')}`);
  assert.deepEqual(
    [...outcomes].filter((o) => o !== 'rate_limited' && o !== 'delivered'),
    [],
  );
});
