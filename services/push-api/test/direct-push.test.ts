import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ConnectionServer } from '@pushline/connection-server';
import { offlineKeys, offlinePartitions } from '@pushline/offline-store';
import { findSamples, parsePrometheusText } from '@pushline/telemetry';
import { DeliveryEvent } from '@pushline/protocol';
import { collectRecords, recordJson, waitUntil } from '@pushline/testkit';
import { call } from './harness.ts';
import { startPlatform, type Platform } from './platform.ts';

interface DirectResult {
  id: string;
  deviceId: string;
  outcome: string;
  latencyMs: number;
  reason?: string;
}

let p: Platform;
let A: ConnectionServer;
let B: ConnectionServer;

before(async () => {
  p = await startPlatform('direct');
  [A, B] = p.servers as [ConnectionServer, ConnectionServer];
});
after(() => p.close());

const push = (deviceId: string, body: Record<string, unknown>) =>
  call(p.h.url, 'POST', `/v1/devices/${deviceId}/messages`, { key: p.h.keys.push, body });

describe('direct push to a device', () => {
  it('delivers to devices on server A and on server B: 200 delivered with the latency', async () => {
    const onA = await p.connect(A, 'dp-a', 'dp-user-1');
    const onB = await p.connect(B, 'dp-b', 'dp-user-2');
    for (const device of [onA, onB]) {
      const received = device.nextMessage();
      const res = await push(device.id, { id: `m-${device.id}`, payload: { text: `hi ${device.id}` } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const body = res.body as DirectResult;
      assert.equal(body.outcome, 'delivered');
      assert.equal(body.id, `m-${device.id}`);
      assert.equal(body.deviceId, device.id);
      assert.ok(body.latencyMs >= 0);
      const msg = await received;
      assert.equal(msg.id, `m-${device.id}`);
      assert.deepEqual(msg.payload, { text: `hi ${device.id}` });
    }
  });

  it('404 not_connected for a device with no connection', async () => {
    const res = await push('dp-nobody', { payload: 1 });
    assert.equal(res.status, 404);
    assert.match(res.contentType, /^application\/json/);
    const body = res.body as DirectResult;
    assert.equal(body.outcome, 'not_connected');
    assert.equal(body.deviceId, 'dp-nobody');
    assert.ok(body.id.length > 0);
  });

  it('delivers to a device pushed to while offline as soon as it connects (no cached not_connected)', async () => {
    const before = await push('dp-late', { payload: 'early' });
    assert.equal(before.status, 404);
    const device = await p.connect(A, 'dp-late', 'dp-user-late');
    const online = await call(p.h.url, 'GET', '/v1/devices/dp-late/presence', { key: p.h.keys.admin });
    assert.equal((online.body as { online: boolean }).online, true);
    const received = device.nextMessage();
    const res = await push('dp-late', { id: 'm-late', payload: 'now' });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal((await received).id, 'm-late');
  });

  it('422 rejected when the device acks {ok:false}, with its reason', async () => {
    await p.connect(B, 'dp-rejecting', 'dp-user-3', 'reject');
    const res = await push('dp-rejecting', { payload: 'nope' });
    assert.equal(res.status, 422);
    const body = res.body as DirectResult;
    assert.equal(body.outcome, 'rejected');
    assert.equal(body.reason, 'muted');
  });

  it('504 timeout when the device never acks', async () => {
    const silent = await p.connect(A, 'dp-silent', 'dp-user-4', 'silent');
    const res = await push('dp-silent', { payload: 'anyone?', timeoutMs: 300 });
    assert.equal(res.status, 504);
    const body = res.body as DirectResult;
    assert.equal(body.outcome, 'timeout');
    assert.ok(body.latencyMs >= 250, `latency ${body.latencyMs}`);
    assert.equal(silent.received.length, 1);
  });

  it('504 timeout (may have been delivered) when the device disconnects mid-push, after it got the message', async () => {
    const leaving = await p.connect(B, 'dp-leaving', 'dp-user-5', 'disconnect');
    const res = await push('dp-leaving', { payload: 'bye', timeoutMs: 5_000 });
    // The device has the message: not_connected ("known not delivered") would be false.
    assert.equal(res.status, 504, JSON.stringify(res.body));
    const body = res.body as DirectResult;
    assert.equal(body.outcome, 'timeout');
    assert.equal(body.reason, 'disconnected');
    assert.ok(body.latencyMs < 5_000);
    assert.equal(leaving.received.length, 1);
  });

  it('with ttlSeconds, an offline device gets 202 stored, and the message on reconnect', async () => {
    const res = await push('dp-later', { id: 'stored-1', payload: { n: 1 }, ttlSeconds: 60 });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const body = res.body as DirectResult;
    assert.equal(body.outcome, 'stored');
    assert.equal(body.reason, 'not_connected');

    const device = await p.connect(B, 'dp-later', 'dp-user-6');
    await waitUntil(() => device.received.find((m) => m.id === 'stored-1'), { what: 'the stored message' });
    assert.deepEqual(device.received.find((m) => m.id === 'stored-1')?.payload, { n: 1 });
    // The server that drained it records the delivered outcome on the delivery-events topic.
    const [outcome] = await collectRecords(p.h.kafka, p.h.topics.deliveryEvents, 1, {
      filter: (r) => {
        const e = DeliveryEvent.parse(recordJson(r));
        return e.requestId === 'stored-1' && e.outcome === 'delivered';
      },
    });
    assert.ok(outcome, 'the stored message’s delivered outcome');
  });

  it('stores per API key: another key reusing a message id cannot suppress the message', async () => {
    for (const key of [p.h.keys.push, p.h.keys.admin]) {
      const res = await call(p.h.url, 'POST', '/v1/devices/dp-shared/messages', {
        key,
        body: { id: 'shared-id', payload: { from: key.slice(0, 8) }, ttlSeconds: 60 },
      });
      assert.equal(res.status, 202, JSON.stringify(res.body));
    }
    assert.equal(
      await p.h.redis.hlen(
        offlineKeys(p.h.keyPrefix, offlinePartitions(p.h.redis, undefined)).messages('dp-shared'),
      ),
      2,
      'both messages stored',
    );
  });

  it('delivers per API key: another key reusing a message id on the same connection is sent, not a duplicate', async () => {
    const device = await p.connect(B, 'dp-keys', 'dp-user-keys');
    const send = (key: string, text: string) =>
      call(p.h.url, 'POST', '/v1/devices/dp-keys/messages', {
        key,
        body: { id: 'key-id', payload: { text } },
      });
    const first = await send(p.h.keys.push, 'from push');
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal((first.body as { duplicate?: boolean }).duplicate, undefined);
    // Another key, the same id, the same connection: its own message, sent and acked.
    const second = await send(p.h.keys.admin, 'from admin');
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.equal((second.body as { duplicate?: boolean }).duplicate, undefined, 'not taken for the first');
    // The first key retrying its id is the duplicate: answered from the connection's memory.
    const retry = await send(p.h.keys.push, 'from push again');
    assert.equal(retry.status, 200, JSON.stringify(retry.body));
    assert.equal((retry.body as { duplicate?: boolean }).duplicate, true);
    assert.deepEqual(
      device.received.map((m) => [m.id, m.payload]),
      [
        ['key-id', { text: 'from push' }],
        ['key-id', { text: 'from admin' }],
      ],
    );
  });

  it('with ttlSeconds, a device that does not ack in time gets 202 stored', async () => {
    await p.connect(A, 'dp-slow', 'dp-user-7', 'silent');
    const res = await push('dp-slow', { payload: 1, ttlSeconds: 60, timeoutMs: 200 });
    assert.equal(res.status, 202);
    assert.equal((res.body as DirectResult).reason, 'timeout');
  });

  // docs/observability.md, identity 7: the API counts each push's live outcome exactly as the
  // router does, stored pushes included (they count under the outcome they followed, and once more
  // in the API's offline store counter).
  it('counts outcomes in /metrics the way the router does, stored pushes included', async () => {
    const families = parsePrometheusText(String((await call(p.h.opsUrl, 'GET', '/metrics')).body));
    const count = (name: string, labels: Record<string, string> = {}) =>
      findSamples(families, name, labels).reduce((n, s) => n + s.value, 0);
    for (const outcome of ['delivered', 'not_connected', 'rejected', 'timeout']) {
      const pushed = count('pushline_api_push_outcomes_total', { outcome });
      assert.ok(pushed >= 1, `outcome ${outcome} counted`);
      assert.equal(
        pushed,
        count('pushline_router_deliveries_total', { source: 'direct', outcome }),
        `API vs router: ${outcome}`,
      );
    }
    assert.equal(count('pushline_api_push_outcomes_total', { outcome: 'stored' }), 0);
    assert.equal(count('pushline_offline_stored_total'), 4, 'the four pushes answered 202 stored');
    assert.equal(
      count('pushline_api_push_to_ack_seconds_count'),
      count('pushline_api_push_outcomes_total', { outcome: 'delivered' }),
    );
  });
});

describe('push to a user', () => {
  it('answers one outcome per connected device, across servers', async () => {
    await p.connect(A, 'usr-phone', 'user-multi');
    await p.connect(B, 'usr-laptop', 'user-multi');
    await p.connect(B, 'usr-tablet', 'user-multi', 'reject');
    const res = await call(p.h.url, 'POST', '/v1/users/user-multi/messages', {
      key: p.h.keys.push,
      body: { id: 'to-user-1', payload: { hello: 'all' } },
    });
    assert.equal(res.status, 200);
    const body = res.body as { id: string; userId: string; results: DirectResult[] };
    assert.equal(body.id, 'to-user-1');
    assert.equal(body.userId, 'user-multi');
    const byDevice = Object.fromEntries(body.results.map((r) => [r.deviceId, r.outcome]));
    assert.deepEqual(byDevice, {
      'usr-phone': 'delivered',
      'usr-laptop': 'delivered',
      'usr-tablet': 'rejected',
    });
  });

  it('answers an empty list for a user with no connected device', async () => {
    const res = await call(p.h.url, 'POST', '/v1/users/user-none/messages', {
      key: p.h.keys.push,
      body: { payload: 1 },
    });
    assert.equal(res.status, 200);
    assert.deepEqual((res.body as { results: unknown[] }).results, []);
  });
});

describe('concurrent direct pushes (one frame per connection server and turn)', () => {
  const frames = async () => {
    const text = String((await call(p.h.opsUrl, 'GET', '/metrics')).body);
    return findSamples(parsePrometheusText(text), 'pushline_channel_frames_sent_total').reduce(
      (sum, s) => sum + s.value,
      0,
    );
  };

  it('each request gets its own device’s outcome, and a silent device holds back only its own', async () => {
    const acking = [
      await p.connect(A, 'cc-a1', 'cc-user-1'),
      await p.connect(A, 'cc-a2', 'cc-user-2'),
      await p.connect(A, 'cc-a3', 'cc-user-3'),
      await p.connect(B, 'cc-b1', 'cc-user-4'),
      await p.connect(B, 'cc-b2', 'cc-user-5'),
    ];
    await p.connect(A, 'cc-silent', 'cc-user-6', 'silent');
    await p.connect(B, 'cc-rejecting', 'cc-user-7', 'reject');
    const done: string[] = [];
    const pushTo = async (deviceId: string, body: Record<string, unknown>) => {
      const res = await push(deviceId, { id: `cc-${deviceId}`, payload: { to: deviceId }, ...body });
      done.push(deviceId);
      return { deviceId, status: res.status, body: res.body as DirectResult };
    };
    const results = await Promise.all([
      pushTo('cc-silent', { timeoutMs: 1_500 }),
      ...acking.map((d) => pushTo(d.id, {})),
      pushTo('cc-rejecting', {}),
      pushTo('cc-nobody', {}),
    ]);
    assert.deepEqual(
      results.map((r) => [r.deviceId, r.status, r.body.outcome, r.body.id]),
      [
        ['cc-silent', 504, 'timeout', 'cc-cc-silent'],
        ...acking.map((d) => [d.id, 200, 'delivered', `cc-${d.id}`]),
        ['cc-rejecting', 422, 'rejected', 'cc-cc-rejecting'],
        ['cc-nobody', 404, 'not_connected', 'cc-cc-nobody'],
      ],
    );
    assert.equal(done.at(-1), 'cc-silent', `answered in the order ${done.join(', ')}`);
    for (const d of acking)
      assert.deepEqual(
        d.received.map((m) => m.id),
        [`cc-${d.id}`],
      );
  });

  it('a user push to devices on two servers is one frame to each, with an outcome per device', async () => {
    await p.connect(A, 'ccu-1', 'cc-multi');
    await p.connect(A, 'ccu-2', 'cc-multi');
    await p.connect(A, 'ccu-3', 'cc-multi', 'reject');
    await p.connect(B, 'ccu-4', 'cc-multi');
    const before = await frames();
    const res = await call(p.h.url, 'POST', '/v1/users/cc-multi/messages', {
      key: p.h.keys.push,
      body: { payload: 'all of you' },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const outcomes = Object.fromEntries(
      (res.body as { results: DirectResult[] }).results.map((r) => [r.deviceId, r.outcome]),
    );
    assert.deepEqual(outcomes, {
      'ccu-1': 'delivered',
      'ccu-2': 'delivered',
      'ccu-3': 'rejected',
      'ccu-4': 'delivered',
    });
    assert.equal(await frames(), before + 2, 'the three devices on A share one frame, B gets one');
  });
});

describe('push to a topic', () => {
  it('reaches subscribers on both servers and counts their acks', async () => {
    const one = await p.connect(A, 'top-1', 'top-user-1', 'ack', { topics: ['scores'] });
    const two = await p.connect(B, 'top-2', 'top-user-2', 'ack', { topics: ['scores'] });
    await p.connect(B, 'top-3', 'top-user-3');
    for (const d of [one, two])
      assert.deepEqual(await d.request('subscribe', { topic: 'scores' }), { ok: true, topic: 'scores' });
    const got = Promise.all([one.nextMessage(), two.nextMessage()]);
    const res = await call(p.h.url, 'POST', '/v1/topics/scores/messages', {
      key: p.h.keys.push,
      body: { id: 'goal-1', payload: { goal: 1 }, timeoutMs: 2_000 },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(
      { ...(res.body as object), latencyMs: 0 },
      { id: 'goal-1', topic: 'scores', delivered: 2, latencyMs: 0 },
    );
    const msgs = await got;
    assert.ok(msgs.every((m) => m.id === 'goal-1' && m.topic === 'scores'));
  });
});

describe('device-to-device across servers', () => {
  it('delivers to a device of the same user on the other server; the sender’s ack carries the outcome', async () => {
    const sender = await p.connect(A, 'd2d-from', 'd2d-user');
    const target = await p.connect(B, 'd2d-to', 'd2d-user');
    const got = target.nextMessage();
    const ack = (await sender.request('send', { to: 'd2d-to', id: 'd2d-1', payload: { ping: true } })) as {
      ok: boolean;
      outcome: string;
      id: string;
    };
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal(ack.outcome, 'delivered');
    assert.equal(ack.id, 'd2d-1');
    const msg = await got;
    assert.equal(msg.from, 'd2d-from');
    assert.deepEqual(msg.payload, { ping: true });
  });

  it('denies a device of another user (default policy same-user) without revealing that it is online', async () => {
    const sender = await p.connect(A, 'd2d-stranger', 'd2d-other-user');
    const victim = await p.connect(B, 'd2d-victim', 'd2d-victim-user');
    // The connection server answers a denied target exactly like an offline one, so a device cannot
    // probe which devices of other users are connected.
    const ack = (await sender.request('send', { to: 'd2d-victim', id: 'd2d-denied', payload: 1 })) as {
      ok: boolean;
      outcome?: string;
    };
    assert.deepEqual({ ok: ack.ok, outcome: ack.outcome }, { ok: true, outcome: 'not_connected' });
    // A message sent after the denied one arrives first: the denied one never went out.
    const next = victim.nextMessage();
    assert.equal((await push('d2d-victim', { id: 'after-denied', payload: 2 })).status, 200);
    assert.equal((await next).id, 'after-denied');
    assert.deepEqual(
      victim.received.map((m) => m.id),
      ['after-denied'],
    );
  });
});

describe('device-to-device rate limit', () => {
  let q: Platform;
  before(async () => {
    q = await startPlatform('d2drate', {
      serverEnv: { PUSHLINE_D2D_RATE_PER_S: '1', PUSHLINE_D2D_BURST: '2' },
    });
  });
  after(() => q.close());

  it('answers rate_limited once the sender’s burst is spent', async () => {
    const [a, b] = q.servers as [ConnectionServer, ConnectionServer];
    const sender = await q.connect(a, 'rl-from', 'rl-user');
    await q.connect(b, 'rl-to', 'rl-user');
    const acks: { ok: boolean; outcome?: string; error?: { code: string } }[] = [];
    for (let i = 0; i < 3; i++)
      acks.push((await sender.request('send', { to: 'rl-to', payload: i })) as (typeof acks)[number]);
    assert.deepEqual(
      acks.map((a) => a.outcome ?? a.error?.code),
      ['delivered', 'delivered', 'rate_limited'],
    );
  });
});
