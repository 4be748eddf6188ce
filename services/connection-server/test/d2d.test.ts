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
