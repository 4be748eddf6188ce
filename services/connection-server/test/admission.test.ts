import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import { silentLogger } from '@pushline/telemetry';
import { testInfra, uniquePrefix, waitUntil, within } from '@pushline/testkit';
import { Redis } from 'ioredis';
import { Manager, io, type Socket as ClientSocket } from 'socket.io-client';
import { SocketServer, type SocketServerOptions } from '../src/socket-server.ts';

/** Resolves with the message of the socket's `connect_error`; rejects if it connects. */
function refusal(socket: ClientSocket): Promise<string> {
  return within(
    new Promise<string>((resolve, reject) => {
      socket.once('connect', () => reject(new Error('device was accepted')));
      socket.once('connect_error', (err) => resolve(err.message));
    }),
    5_000,
    'connect_error',
  );
}

describe('handshake admission control', () => {
  const cleanup: (() => unknown)[] = [];
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });
  /**
   * A socket server whose token check is held by the test (`held`, released in order), standing in
   * for a slow one, and a way to open devices against it.
   */
  const startHeldServer = async (options: Omit<SocketServerOptions, 'config' | 'redis' | 'logger'>) => {
    const redis = new Redis(testInfra().redisUrl);
    cleanup.push(() => redis.quit());
    const config = parseEnv(connectionServerEnv, {
      PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: testInfra().redisUrl,
      PUSHLINE_KEY_PREFIX: `${uniquePrefix('admission')}:`,
      PUSHLINE_INTERNAL_TOKEN: 'x'.repeat(32),
      PUSHLINE_DEVICE_JWT_SECRET: 'y'.repeat(32),
      PUSHLINE_HOST: '127.0.0.1',
      PUSHLINE_PORT: '0',
    });
    const server = new SocketServer({ config, redis, logger: silentLogger(), ...options });
    const held: (() => void)[] = [];
    server.io.use((_socket, next) => held.push(() => next()));
    server.io.on('connection', (socket) => server.authenticated(socket));
    const url = await server.start();
    cleanup.push(() => server.close());
    const open = (): ClientSocket => {
      const socket = io(url, { transports: ['websocket'], reconnection: false, forceNew: true });
      cleanup.push(() => void socket.disconnect());
      return socket;
    };
    return { server, url, held, open };
  };

  it('refuses handshakes past maxPendingHandshakes at the upgrade, and admits again once one completes', async () => {
    let busy = 0;
    const { server, held, open } = await startHeldServer({ maxPendingHandshakes: 1, onBusy: () => busy++ });

    const first = open();
    await waitUntil(() => held.length === 1, { timeoutMs: 5_000, what: 'first handshake pending' });
    assert.equal(server.pendingHandshakes, 1);

    assert.equal(await refusal(open()), 'websocket error');
    assert.equal(busy, 1);

    const connected = within(
      new Promise<void>((resolve) => first.once('connect', () => resolve())),
      5_000,
      'first device to connect',
    );
    held[0]?.();
    await connected;
    assert.equal(server.pendingHandshakes, 0);

    // A refused or abandoned handshake does not keep its slot either.
    const third = open();
    await waitUntil(() => held.length === 2, { timeoutMs: 5_000, what: 'third handshake pending' });
    third.disconnect();
    await waitUntil(() => server.pendingHandshakes === 0, {
      timeoutMs: 5_000,
      what: 'abandoned handshake released',
    });
  });

  it('measures the queue by handshakes that asked to join, so an idle connection cannot block admission', async () => {
    // A queue bound of 0 ms: any handshake that asked to join and is still pending refuses the next.
    const { server, url, held, open } = await startHeldServer({ maxHandshakeQueueMs: 0 });

    // An engine connection that never sends CONNECT, as a client that stalls (or an attacker) would.
    const idle = new Manager(url, { transports: ['websocket'], reconnection: false, autoConnect: false });
    cleanup.push(() => idle.engine?.close());
    await within(
      new Promise<void>((resolve, reject) => idle.open((err) => (err ? reject(err) : resolve()))),
      5_000,
      'idle engine connection',
    );
    await waitUntil(() => server.pendingHandshakes === 1, {
      timeoutMs: 5_000,
      what: 'idle connection pending',
    });

    const asking = open();
    await waitUntil(() => held.length === 1, {
      timeoutMs: 5_000,
      what: 'a device admitted past the idle one',
    });
    // That device asked to join and is held: now the queue is behind, and the next is refused.
    assert.equal(await refusal(open()), 'websocket error');
    const connected = within(
      new Promise<void>((resolve) => asking.once('connect', () => resolve())),
      5_000,
      'held device to connect',
    );
    held[0]?.();
    await connected;
  });
});
