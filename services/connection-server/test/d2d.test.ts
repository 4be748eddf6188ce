import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DeviceMessage, SendAck } from '@pushline/protocol';
import { waitUntil } from '@pushline/testkit';
import { createWorld, metricValue, type ClientSocket, type TestWorld } from './helpers.ts';

type Ack = (answer: unknown) => void;

function send(socket: ClientSocket, body: unknown): Promise<SendAck> {
  return socket
    .timeout(5_000)
    .emitWithAck('send', body)
    .then((ack: unknown) => SendAck.parse(ack));
}

function inbox(socket: ClientSocket): DeviceMessage[] {
  const seen: DeviceMessage[] = [];
  socket.on('message', (msg: unknown, ack: Ack) => {
    seen.push(DeviceMessage.parse(msg));
    ack({ ok: true });
  });
  return seen;
}

describe('device-to-device', () => {
  let world: TestWorld;
  beforeEach(async () => {
    world = await createWorld('d2d');
  });
  afterEach(async () => {
    await world.close();
  });

  it('delivers between devices of the same user on the same and on another server', async () => {
    const a = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-a' } });
    const b = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-b' } });
    const phone = await world.connect(a.server.deviceUrl, await world.token({ sub: 'phone', uid: 'u1' }));
    const tablet = await world.connect(a.server.deviceUrl, await world.token({ sub: 'tablet', uid: 'u1' }));
    const laptop = await world.connect(b.server.deviceUrl, await world.token({ sub: 'laptop', uid: 'u1' }));
    const tabletInbox = inbox(tablet);
    const laptopInbox = inbox(laptop);
    await waitUntil(async () => (await world.registry.userDevices('u1')).length === 3, {
      what: 'registrations',
    });

    const local = await send(phone, { to: 'tablet', payload: { hi: 1 }, id: 'msg-1' });
    assert.deepEqual(
      { ...local, latencyMs: 0 },
      { ok: true, id: 'msg-1', outcome: 'delivered', latencyMs: 0 },
    );
    assert.equal(tabletInbox[0]?.from, 'phone');
    assert.deepEqual(tabletInbox[0]?.payload, { hi: 1 });

    const remote = await send(phone, { to: 'laptop', payload: 'yo' });
    assert.equal(remote.ok && remote.outcome, 'delivered');
    assert.equal(laptopInbox[0]?.from, 'phone');
    assert.equal(laptopInbox[0]?.id, remote.ok ? remote.id : undefined);

    const offline = await send(phone, { to: 'watch', payload: 1 });
    assert.equal(offline.ok && offline.outcome, 'not_connected');
    assert.equal(await metricValue(a.metrics, 'pushline_d2d_total', { outcome: 'delivered' }), 2);
  });

  it('answers a device of another user like an offline one under the same-user policy', async () => {
    const { server } = await world.startServer();
    const mine = await world.connect(server.deviceUrl, await world.token({ sub: 'mine', uid: 'u1' }));
    const theirs = await world.connect(server.deviceUrl, await world.token({ sub: 'theirs', uid: 'u2' }));
    const theirInbox = inbox(theirs);
    await waitUntil(() => world.registry.lookup('theirs'), { what: 'registration' });
    const ack = await send(mine, { to: 'theirs', payload: 1 });
    assert.equal(ack.ok && ack.outcome, 'not_connected');
    assert.equal(theirInbox.length, 0);
  });

  it('same-tenant, any and none policies', async () => {
    const tenant = await world.startServer({
      env: { PUSHLINE_D2D_POLICY: 'same-tenant', PUSHLINE_SERVER_ID: 'st' },
    });
    const a = await world.connect(
      tenant.server.deviceUrl,
      await world.token({ sub: 'a', uid: 'u1', tid: 't1' }),
    );
    inbox(
      await world.connect(tenant.server.deviceUrl, await world.token({ sub: 'b', uid: 'u2', tid: 't1' })),
    );
    inbox(
      await world.connect(tenant.server.deviceUrl, await world.token({ sub: 'c', uid: 'u3', tid: 't2' })),
    );
    await waitUntil(async () => (await world.registry.lookupMany(['b', 'c'])).every((r) => r !== null), {
      what: 'registrations',
    });
    assert.equal((await send(a, { to: 'b', payload: 1 })).ok && 'delivered', 'delivered');
    const other = await send(a, { to: 'c', payload: 1 });
    assert.equal(other.ok && other.outcome, 'not_connected');

    const none = await world.startServer({ env: { PUSHLINE_D2D_POLICY: 'none', PUSHLINE_SERVER_ID: 'sn' } });
    const d = await world.connect(none.server.deviceUrl, await world.token({ sub: 'd', uid: 'u1' }));
    const refused = await send(d, { to: 'a', payload: 1 });
    assert.equal(!refused.ok && refused.error.code, 'forbidden');
  });

  it('keeps device-chosen ids apart from backend ids and from other senders (dedupe namespaces)', async () => {
    const { server } = await world.startServer();
    const sibling = await world.connect(server.deviceUrl, await world.token({ sub: 'sibling', uid: 'u1' }));
    const other = await world.connect(server.deviceUrl, await world.token({ sub: 'other', uid: 'u1' }));
    const target = await world.connect(server.deviceUrl, await world.token({ sub: 'target', uid: 'u1' }));
    const received = inbox(target);
    await waitUntil(() => world.registry.lookup('target'), { what: 'registration' });

    const first = await send(sibling, { to: 'target', payload: 'from sibling', id: 'x-1' });
    assert.equal(first.ok && first.outcome, 'delivered');
    // The backend's own message x-1 is another message: it must reach the device.
    const backend = await server.deliverLocal({
      messageId: 'x-1',
      deviceId: 'target',
      payload: 'from backend',
      source: 'direct',
      timeoutMs: 2_000,
    });
    assert.deepEqual({ ...backend, latencyMs: 0 }, { outcome: 'delivered', latencyMs: 0 });
    // So is another device's x-1; the sibling's own retry of x-1 is the duplicate.
    const fromOther = await send(other, { to: 'target', payload: 'from other', id: 'x-1' });
    assert.equal(fromOther.ok && fromOther.outcome, 'delivered');
    const retry = await send(sibling, { to: 'target', payload: 'from sibling', id: 'x-1' });
    assert.equal(retry.ok && retry.outcome, 'delivered');
    assert.deepEqual(
      received.map((m) => [m.id, m.from, m.payload]),
      [
        ['x-1', 'sibling', 'from sibling'],
        ['x-1', undefined, 'from backend'],
        ['x-1', 'other', 'from other'],
      ],
    );
  });

  it('checks the policy on the receiving server, even after the router re-read a stale cache entry', async () => {
    const a = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-a' } });
    const b = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-b' } });
    const phone = await world.connect(a.server.deviceUrl, await world.token({ sub: 'phone', uid: 'u1' }));
    const tablet = await world.connect(b.server.deviceUrl, await world.token({ sub: 'tablet', uid: 'u1' }));
    inbox(tablet);
    await waitUntil(() => world.registry.lookup('tablet'), { what: 'registration' });
    // Server A now caches: tablet is on B, user u1.
    const allowed = await send(phone, { to: 'tablet', payload: 1 });
    assert.equal(allowed.ok && allowed.outcome, 'delivered');

    // The device id moves to another user's device; A's cache still says u1.
    tablet.disconnect();
    await waitUntil(async () => (await world.registry.lookup('tablet')) === null, { what: 'tablet gone' });
    const intruder = await world.connect(b.server.deviceUrl, await world.token({ sub: 'tablet', uid: 'u2' }));
    const intruderInbox = inbox(intruder);
    await waitUntil(async () => (await world.registry.lookup('tablet'))?.userId === 'u2', {
      what: 'the new registration',
    });

    const refused = await send(phone, { to: 'tablet', payload: 'private' });
    assert.equal(refused.ok && refused.outcome, 'not_connected');
    assert.equal(intruderInbox.length, 0);
    // Two refusals on B: the stale cached connection, then the fresh one the router re-read.
    assert.equal(
      await metricValue(b.metrics, 'pushline_server_deliveries_total', {
        source: 'd2d',
        outcome: 'not_connected',
      }),
      2,
    );
  });

  it('refuses a device-to-device deliver request without the sender identity (fails closed)', async () => {
    const { server } = await world.startServer();
    const target = await world.connect(server.deviceUrl, await world.token({ sub: 'target', uid: 'u1' }));
    const received = inbox(target);
    const base = {
      messageId: 'm-1',
      deviceId: 'target',
      payload: 1,
      source: 'd2d',
      from: 'x',
      timeoutMs: 2_000,
    } as const;
    assert.equal((await server.deliverLocal(base)).outcome, 'not_connected');
    assert.equal((await server.deliverLocal({ ...base, fromUser: 'u2' })).outcome, 'not_connected');
    assert.equal(
      (await server.deliverLocal({ ...base, messageId: 'm-2', fromUser: 'u1' })).outcome,
      'delivered',
    );
    assert.deepEqual(
      received.map((m) => m.id),
      ['m-2'],
    );
  });

  it('rate-limits each device and rejects invalid or oversized sends', async () => {
    const { server, metrics } = await world.startServer({
      env: { PUSHLINE_D2D_RATE_PER_S: '1', PUSHLINE_D2D_BURST: '2', PUSHLINE_MAX_PAYLOAD_BYTES: '32' },
    });
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const tooBig = await send(device, { to: 'x', payload: 'y'.repeat(64) });
    assert.equal(!tooBig.ok && tooBig.error.code, 'payload_too_large');
    const invalid = await send(device, { payload: 1 });
    assert.equal(!invalid.ok && invalid.error.code, 'invalid_request');
    const results = [];
    for (let i = 0; i < 3; i++) results.push(await send(device, { to: 'nobody', payload: i }));
    assert.deepEqual(
      results.map((r) => (r.ok ? r.outcome : r.error.code)),
      ['not_connected', 'not_connected', 'rate_limited'],
    );
    assert.equal(await metricValue(metrics, 'pushline_d2d_total', { outcome: 'rate_limited' }), 1);
  });
});
