import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import { silentLogger } from '@pushline/telemetry';
import { testInfra, uniquePrefix, waitUntil, within } from '@pushline/testkit';
import { Redis } from 'ioredis';
import { Manager, io, type Socket as ClientSocket } from 'socket.io-client';
import { WebSocket } from 'ws';
import { SocketServer, type SocketServerOptions } from '../src/socket-server.ts';
import { rawDevice, type RawDevice } from './helpers.ts';

/** The HTTP status a WebSocket upgrade gets when the server refuses it (rejects if it opens). */
function upgradeRefusal(
  url: string,
  options: { localAddress?: string; query?: string } = {},
): Promise<number> {
  const ws = new WebSocket(
    `${url.replace(/^http/, 'ws')}/socket.io/?${options.query ?? 'EIO=4&transport=websocket'}`,
    options.localAddress ? { localAddress: options.localAddress } : {},
  );
  return within(
    new Promise<number>((resolve, reject) => {
      ws.once('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.once('upgrade', () => {
        ws.terminate();
        reject(new Error('the upgrade was accepted'));
      });
      ws.once('error', () => {});
    }),
    5_000,
    'upgrade answer',
  );
}

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
  const startHeldServer = async (
    options: Omit<SocketServerOptions, 'config' | 'redis' | 'logger'>,
    env: Record<string, string> = {},
  ) => {
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
      ...env,
    });
    const server = new SocketServer({ config, redis, logger: silentLogger(), ...options });
    const held: (() => void)[] = [];
    server.io.use((_socket, next) => held.push(() => next()));
    server.io.on('connection', (socket) => server.authenticated(socket));
    const url = await server.start();
    cleanup.push(() => server.close());
    const open = (localAddress?: string): ClientSocket => {
      const socket = io(url, {
        transports: ['websocket'],
        reconnection: false,
        forceNew: true,
        ...(localAddress ? { localAddress } : {}),
      });
      cleanup.push(() => void socket.disconnect());
      return socket;
    };
    const raw = async (localAddress?: string): Promise<RawDevice> => {
      const device = await rawDevice(url, undefined, localAddress ? { localAddress } : {});
      cleanup.push(() => device.ws.terminate());
      return device;
    };
    return { server, url, held, open, raw };
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

  it('does not count transports that never send CONNECT: a device gets in past thousands of them', async () => {
    const { server, held, open, raw } = await startHeldServer({
      maxPendingHandshakes: 100,
      maxPendingPerAddress: 0,
      connectPacketTimeoutMs: 120_000,
    });
    const idle = 2_000;
    for (let opened = 0; opened < idle; opened += 200) {
      await Promise.all(Array.from({ length: 200 }, () => raw()));
    }
    assert.equal(server.pendingHandshakes, idle);
    assert.equal(server.askingHandshakes, 0);

    const device = open();
    await waitUntil(() => held.length === 1, { timeoutMs: 10_000, what: 'the device admitted' });
    const connected = within(
      new Promise<void>((resolve) => device.once('connect', () => resolve())),
      5_000,
      'device to connect',
    );
    held[0]?.();
    await connected;
  });

  it('closes a transport that sends no CONNECT within the short timeout, but not a device that asked', async () => {
    let noConnect = 0;
    const { server, held, open, raw } = await startHeldServer({
      connectPacketTimeoutMs: 200,
      onRefused: (reason) => {
        if (reason === 'no_connect') noConnect++;
      },
    });
    const asking = open();
    await waitUntil(() => held.length === 1, { timeoutMs: 5_000, what: 'device asking to join' });
    const idle = await raw();
    await idle.closed();
    assert.equal(noConnect, 1);
    // The device asked before the idle transport even opened, and is still waiting for its answer.
    assert.equal(asking.io.engine.readyState, 'open');
    assert.equal(server.pendingHandshakes, 1);
    const connected = within(
      new Promise<void>((resolve) => asking.once('connect', () => resolve())),
      5_000,
      'held device to connect',
    );
    held[0]?.();
    await connected;
  });

  it('caps pending handshakes per client address with an HTTP 400 before the upgrade', async () => {
    let perAddress = 0;
    const { server, held, open, raw } = await startHeldServer({
      maxPendingPerAddress: 3,
      connectPacketTimeoutMs: 120_000,
      onRefused: (reason) => {
        if (reason === 'per_address') perAddress++;
      },
    });
    const fromOneHost = await Promise.all([raw('127.0.0.2'), raw('127.0.0.2'), raw('127.0.0.2')]);
    assert.equal(await upgradeRefusal(server.url, { localAddress: '127.0.0.2' }), 400);
    assert.equal(perAddress, 1);

    // Another address is not affected.
    const device = open('127.0.0.1');
    await waitUntil(() => held.length === 1, { timeoutMs: 5_000, what: 'device from another address' });
    const connected = within(
      new Promise<void>((resolve) => device.once('connect', () => resolve())),
      5_000,
      'device to connect',
    );
    held[0]?.();
    await connected;

    // A slot of the capped address comes back once one of its transports closes.
    fromOneHost[0]?.ws.terminate();
    await waitUntil(() => server.pendingHandshakes === 2, {
      timeoutMs: 5_000,
      what: 'closed transport released',
    });
    await raw('127.0.0.2');
  });

  it('refuses an EIO=3 WebSocket upgrade with a real HTTP 400 instead of 101', async () => {
    const { url } = await startHeldServer({});
    assert.equal(await upgradeRefusal(url, { query: 'EIO=3&transport=websocket' }), 400);
    assert.equal(await upgradeRefusal(url, { query: 'transport=websocket' }), 400);
  });

  it('answers an upgrade outside the socket.io path with 404 problem+json, then closes the connection', async () => {
    const { url } = await startHeldServer({});
    for (const path of ['/other', '/', '/socket.iox/?EIO=4&transport=websocket']) {
      const socket = connect({ host: '127.0.0.1', port: Number(new URL(url).port) });
      cleanup.push(() => socket.destroy());
      let answer = '';
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
      const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      socket.write(
        [
          `GET ${path} HTTP/1.1`,
          'Host: device',
          'Upgrade: websocket',
          'Connection: Upgrade',
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
          'Sec-WebSocket-Version: 13',
          '',
          '',
        ].join('\r\n'),
      );
      await within(closed, 5_000, `the upgrade on ${path} to be answered and closed`);
      const [head = '', body = ''] = answer.split('\r\n\r\n');
      assert.match(head, /^HTTP\/1\.1 404 /, `${path}: ${JSON.stringify(answer)}`);
      assert.match(head, /\r\ncontent-type: application\/problem\+json/i, path);
      assert.equal((JSON.parse(body) as { status: number }).status, 404, path);
    }
    // The socket.io path still upgrades.
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`);
    cleanup.push(() => ws.terminate());
    await within(
      new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      }),
      5_000,
      'the socket.io upgrade',
    );
  });

  it('answers plain HTTP on the device port with 404 at once, and bounds request heads in size and time', async () => {
    const { url } = await startHeldServer(
      {},
      { PUSHLINE_HANDSHAKE_TIMEOUT_MS: '500', PUSHLINE_MAX_HEADER_BYTES: '2048' },
    );
    for (const [method, path] of [
      ['GET', '/'],
      ['GET', '/healthz'],
      ['GET', '/metrics'],
      ['POST', '/v1/publish'],
    ] as const) {
      const res = await within(
        fetch(`${url}${path}`, { method, ...(method === 'POST' ? { body: '{}' } : {}) }),
        5_000,
        `${method} ${path} answered`,
      );
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal(res.headers.get('content-type'), 'application/problem+json');
      assert.equal(((await res.json()) as { status: number }).status, 404);
    }
    const big = await within(fetch(`${url}/`, { headers: { 'x-pad': 'a'.repeat(4096) } }), 5_000, 'big head');
    assert.equal(big.status, 431);
    await big.body?.cancel();

    // A client that never finishes its request head is cut off after the handshake bound.
    const stalled = connect({ host: '127.0.0.1', port: Number(new URL(url).port) });
    cleanup.push(() => stalled.destroy());
    let answer = '';
    stalled.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
    stalled.write('GET / HTTP/1.1\r\nHost: device\r\nX-Slow: ');
    await within(
      new Promise<void>((resolve) => stalled.once('close', () => resolve())),
      10_000,
      'stalled request to be closed',
    );
    assert.match(answer, /^HTTP\/1\.1 408/);
  });
});
