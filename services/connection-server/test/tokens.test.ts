import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import {
  DeviceMessage,
  ReconnectHint,
  RefreshTokenAck,
  SubscribeAck,
  TokenExpiring,
} from '@pushline/protocol';
import { waitUntil } from '@pushline/testkit';
import { SignJWT } from 'jose';
import {
  connectError,
  createWorld,
  disconnected,
  metricValue,
  nextEvent,
  type ClientSocket,
  type TestWorld,
} from './helpers.ts';

function refresh(socket: ClientSocket, token: string): Promise<RefreshTokenAck> {
  return socket
    .timeout(5_000)
    .emitWithAck('refresh_token', { token })
    .then((ack: unknown) => RefreshTokenAck.parse(ack));
}

/** Seconds since epoch, as `exp` counts. */
const nowS = () => Math.floor(Date.now() / 1000);

describe('device tokens during the connection', () => {
  let world: TestWorld;
  beforeEach(async () => {
    world = await createWorld('tok');
  });
  afterEach(async () => {
    await world.close();
  });

  /** A server that warns a minute ahead and counts no clock tolerance, so expiry comes on time. */
  const startServer = () =>
    world.startServer({
      env: { PUSHLINE_TOKEN_REFRESH_LEAD_S: '60', PUSHLINE_DEVICE_JWT_CLOCK_TOLERANCE_S: '0' },
    });

  it('warns with token_expiring, then closes with token_expired when no fresh token comes', async () => {
    const { server, metrics } = await startServer();
    const exp = nowS() + 2;
    let expiring: Promise<unknown> | undefined;
    let hint: Promise<unknown> | undefined;
    const device = await world.connect(
      server.deviceUrl,
      await new SignJWT({ uid: 'u1' })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('dev-1')
        .setExpirationTime(exp)
        .sign(new TextEncoder().encode(world.jwtSecret)),
      {},
      (socket) => {
        expiring = nextEvent(socket, 'token_expiring');
        hint = nextEvent(socket, 'reconnect_hint', 10_000);
      },
    );
    const closed = disconnected(device, 10_000);
    assert.deepEqual(TokenExpiring.parse(await expiring), {
      expiresAt: exp * 1000,
      disconnectAt: exp * 1000,
    });
    assert.deepEqual(ReconnectHint.parse(await hint), { reason: 'token_expired', afterMs: 0 });
    assert.equal(await closed, 'io server disconnect');
    assert.ok(Date.now() >= exp * 1000, 'not closed before exp');
    assert.equal(await metricValue(metrics, 'pushline_disconnects_total', { reason: 'token_expired' }), 1);
    await waitUntil(async () => (await world.registry.lookup('dev-1')) === null, { what: 'unregistered' });
  });

  it('keeps a connection that answers token_expiring with a fresh token past the old exp', async () => {
    const { server, metrics } = await startServer();
    const exp = nowS() + 2;
    let expiring: Promise<unknown> | undefined;
    const token = (expiresAt: number | string, claims: Record<string, unknown> = {}) =>
      new SignJWT({ uid: 'u1', topics: ['news', 'sports'], ...claims })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject('dev-1')
        .setExpirationTime(expiresAt)
        .sign(new TextEncoder().encode(world.jwtSecret));
    const device = await world.connect(server.deviceUrl, await token(exp), {}, (socket) => {
      expiring = nextEvent(socket, 'token_expiring');
    });
    for (const topic of ['news', 'sports']) {
      assert.equal(
        SubscribeAck.parse(await device.timeout(5_000).emitWithAck('subscribe', { topic })).ok,
        true,
      );
    }
    await expiring;

    // Fresh tokens for another device, user or tenant, or badly signed ones, are refused.
    const otherDevice = await refresh(device, await world.token({ sub: 'dev-2', uid: 'u1' }));
    assert.deepEqual(!otherDevice.ok && [otherDevice.error.code, otherDevice.error.reason], [
      'token_rejected',
      'token_invalid_claims',
    ]);
    const otherUser = await refresh(device, await world.token({ sub: 'dev-1', uid: 'u2' }));
    assert.equal(!otherUser.ok && otherUser.error.reason, 'token_invalid_claims');
    const forged = await refresh(device, `${(await token('10m')).slice(0, -3)}AAA`);
    assert.deepEqual(!forged.ok && [forged.error.code, forged.error.reason], [
      'token_rejected',
      'token_invalid_signature',
    ]);
    const bad = await device.timeout(5_000).emitWithAck('refresh_token', { token: 42 });
    assert.equal(RefreshTokenAck.parse(bad).ok, false);

    // The fresh token drops `sports`: that subscription ends with it.
    const freshExp = nowS() + 600;
    assert.deepEqual(await refresh(device, await token(freshExp, { topics: ['news'] })), {
      ok: true,
      expiresAt: freshExp * 1000,
    });
    const seen: DeviceMessage[] = [];
    device.on('message', (msg: unknown, ack: (a: unknown) => void) => {
      seen.push(DeviceMessage.parse(msg));
      ack({ ok: true });
    });
    // Past the old exp, with sweeps run since: still connected, still delivering.
    const sweepsAfterExp = async () => {
      if (Date.now() <= exp * 1000 + 100) return false;
      return (await metricValue(metrics, 'pushline_loop_runs_total', { loop: 'token_expiry' })) > 0;
    };
    await waitUntil(sweepsAfterExp, { timeoutMs: 10_000, what: 'the old exp to pass' });
    const runs = await metricValue(metrics, 'pushline_loop_runs_total', { loop: 'token_expiry' });
    await waitUntil(
      async () =>
        (await metricValue(metrics, 'pushline_loop_runs_total', { loop: 'token_expiry' })) > runs + 1,
      { timeoutMs: 10_000, what: 'two more expiry sweeps' },
    );
    assert.ok(device.connected);
    const news = await server.broadcast({ messageId: 'n-1', topic: 'news', payload: 1, timeoutMs: 2_000 });
    const sports = await server.broadcast({ messageId: 's-1', topic: 'sports', payload: 2, timeoutMs: 500 });
    assert.deepEqual([news.delivered, sports.delivered], [1, 0]);
    assert.deepEqual(
      seen.map((m) => m.id),
      ['n-1'],
    );
    assert.equal(await metricValue(metrics, 'pushline_device_tokens_total', { event: 'refreshed' }), 1);
    assert.equal(await metricValue(metrics, 'pushline_disconnects_total', { reason: 'token_expired' }), 0);
  });

  it('verifies HS256 tokens with the key their kid names, and refuses an unknown kid or a foreign typ', async () => {
    const k1 = 'a'.repeat(40);
    const k2 = 'b'.repeat(40);
    const { server } = await world.startServer({ env: { PUSHLINE_DEVICE_JWT_KEYS: `k1:${k1},k2:${k2}` } });
    const sign = (header: Record<string, unknown>, secret: string, sub: string) =>
      new SignJWT({ uid: 'u1' })
        .setProtectedHeader({ alg: 'HS256', ...header })
        .setSubject(sub)
        .setExpirationTime('5m')
        .sign(new TextEncoder().encode(secret));

    assert.ok((await world.connect(server.deviceUrl, await sign({ kid: 'k1' }, k1, 'old-key'))).connected);
    assert.ok((await world.connect(server.deviceUrl, await sign({ kid: 'k2' }, k2, 'new-key'))).connected);
    // Without kid: the default secret, as before the key set.
    assert.ok((await world.connect(server.deviceUrl, await world.token({ sub: 'no-kid' }))).connected);
    for (const [token, code] of [
      [await sign({ kid: 'k3' }, k1, 'd'), 'token_invalid_signature'],
      [await sign({ kid: 'k1' }, k2, 'd'), 'token_invalid_signature'],
      [await sign({ kid: 'k1', typ: 'at+jwt' }, k1, 'd'), 'token_invalid_claims'],
    ] as const) {
      const { error, socket } = await connectError(server.deviceUrl, { token });
      assert.equal(error.message, code);
      socket.disconnect();
    }
  });
});
