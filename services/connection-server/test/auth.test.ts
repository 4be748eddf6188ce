import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { within } from '@pushline/testkit';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { Manager } from 'socket.io-client';
import { connectError, createWorld, disconnected, metricValue, type TestWorld } from './helpers.ts';

describe('device handshake auth', () => {
  let world: TestWorld;
  beforeEach(async () => {
    world = await createWorld('auth');
  });
  afterEach(async () => {
    await world.close();
  });

  /** Asserts the refusal code and that the server closed the transport afterwards. */
  async function expectRefused(url: string, auth: Record<string, unknown> | undefined, code: string) {
    const { error, socket } = await connectError(url, auth);
    assert.equal(error.message, code);
    assert.equal(error.data?.code, code);
    // No unauthenticated socket stays open: the server closes the underlying connection.
    await within(
      new Promise<void>((resolve) => {
        if (socket.io.engine?.readyState === 'closed') return resolve();
        socket.io.once('close', () => resolve());
      }),
      3_000,
      'server to close the refused transport',
    );
    socket.disconnect();
  }

  it('accepts a valid HS256 token and registers the device with the internal URL', async () => {
    const { server, metrics } = await world.startServer();
    const device = await world.connect(
      server.deviceUrl,
      await world.token({ sub: 'dev-1', uid: 'u-1', tid: 't-1' }),
    );
    assert.ok(device.connected);
    const record = await world.registry.lookup('dev-1');
    assert.equal(record?.serverId, server.serverId);
    assert.equal(record?.serverUrl, server.internalUrl);
    assert.equal(record?.userId, 'u-1');
    assert.equal(record?.tenantId, 't-1');
    assert.equal(server.connectionCount, 1);
    assert.equal(await metricValue(metrics, 'pushline_connects_total'), 1);
  });

  it('refuses a handshake without a token: token_missing', async () => {
    const { server, metrics } = await world.startServer();
    await expectRefused(server.deviceUrl, undefined, 'token_missing');
    assert.equal(await metricValue(metrics, 'pushline_auth_failures_total', { code: 'token_missing' }), 1);
    assert.equal(server.connectionCount, 0);
  });

  it('refuses a token that is not a JWT: token_malformed', async () => {
    const { server } = await world.startServer();
    await expectRefused(server.deviceUrl, { token: 'not-a-jwt' }, 'token_malformed');
    await expectRefused(server.deviceUrl, { token: 42 }, 'token_malformed');
  });

  it('refuses an expired token: token_expired', async () => {
    const { server } = await world.startServer();
    const token = await new SignJWT({ uid: 'u-1' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('dev-1')
      .setExpirationTime(Math.floor(Date.now() / 1000) - 3600)
      .sign(new TextEncoder().encode(world.jwtSecret));
    await expectRefused(server.deviceUrl, { token }, 'token_expired');
  });

  it('refuses a token signed with another key: token_invalid_signature', async () => {
    const { server } = await world.startServer();
    const token = await new SignJWT({ uid: 'u-1' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('dev-1')
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('x'.repeat(64)));
    await expectRefused(server.deviceUrl, { token }, 'token_invalid_signature');
  });

  it('refuses a token whose claims do not fit: token_invalid_claims', async () => {
    const { server } = await world.startServer();
    const noUser = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('dev-1')
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode(world.jwtSecret));
    await expectRefused(server.deviceUrl, { token: noUser }, 'token_invalid_claims');
    const badId = await world.token({ sub: 'has spaces' });
    await expectRefused(server.deviceUrl, { token: badId }, 'token_invalid_claims');
  });

  it('refuses a token with the wrong audience: token_invalid_claims', async () => {
    const { server } = await world.startServer({ env: { PUSHLINE_DEVICE_JWT_AUDIENCE: 'pushline' } });
    await expectRefused(
      server.deviceUrl,
      { token: await world.token({ sub: 'dev-1' }) },
      'token_invalid_claims',
    );
  });

  it('accepts RS256 and ES256 tokens verified with a PEM public key', async () => {
    for (const alg of ['RS256', 'ES256'] as const) {
      const { publicKey, privateKey } = await generateKeyPair(alg);
      const { server } = await world.startServer({
        env: { PUSHLINE_DEVICE_JWT_ALG: alg, PUSHLINE_DEVICE_JWT_PUBLIC_KEY: await exportSPKI(publicKey) },
      });
      const token = await new SignJWT({ uid: 'u-1' })
        .setProtectedHeader({ alg })
        .setSubject(`dev-${alg}`)
        .setExpirationTime('5m')
        .sign(privateKey);
      const device = await world.connect(server.deviceUrl, token);
      assert.ok(device.connected);
      // An HS256 token is refused by an RS256/ES256 server.
      await expectRefused(
        server.deviceUrl,
        { token: await world.token({ sub: 'dev-x' }) },
        'token_invalid_signature',
      );
    }
  });

  it('refuses with handshake_timeout when the token cannot be verified in time', async () => {
    // A JWKS endpoint that never answers: verification outlasts the handshake bound.
    const hanging: Server = createServer(() => {});
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = hanging.address() as AddressInfo;
      const { server } = await world.startServer({
        env: {
          PUSHLINE_DEVICE_JWT_ALG: 'RS256',
          PUSHLINE_DEVICE_JWT_JWKS_URL: `http://127.0.0.1:${port}/jwks.json`,
          PUSHLINE_HANDSHAKE_TIMEOUT_MS: '300',
        },
      });
      const { privateKey } = await generateKeyPair('RS256');
      const token = await new SignJWT({ uid: 'u-1' })
        .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
        .setSubject('dev-1')
        .setExpirationTime('5m')
        .sign(privateKey);
      await expectRefused(server.deviceUrl, { token }, 'handshake_timeout');
    } finally {
      hanging.closeAllConnections();
      await new Promise<void>((resolve) => hanging.close(() => resolve()));
    }
  });

  it('closes a transport that never asks to join within the handshake bound', async () => {
    const { server } = await world.startServer({ env: { PUSHLINE_HANDSHAKE_TIMEOUT_MS: '200' } });
    const manager = new Manager(server.deviceUrl, {
      transports: ['websocket'],
      reconnection: false,
      autoConnect: false,
    });
    const closed = new Promise<string>((resolve) => manager.once('close', (reason) => resolve(reason)));
    manager.open();
    assert.equal(await within(closed, 5_000, 'idle transport to be closed'), 'transport close');
  });

  it('refuses new handshakes with server_draining while shutting down', async () => {
    const { server } = await world.startServer({ env: { PUSHLINE_CLOSE_GRACE_MS: '3000' } });
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const hint = new Promise((resolve) => device.once('reconnect_hint', resolve));
    const closing = server.close();
    await within(hint, 3_000, 'reconnect hint');
    await expectRefused(server.deviceUrl, { token: await world.token({ sub: 'dev-2' }) }, 'server_draining');
    device.disconnect();
    await closing;
    await disconnected(device);
  });
});
