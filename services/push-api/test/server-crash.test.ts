import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';
import { DeviceEvents, DeviceMessage } from '@pushline/protocol';
import { testInfra, testSecret, waitUntil, within } from '@pushline/testkit';
import { call, startApi, type ApiHarness } from './harness.ts';

const SERVER_MAIN = fileURLToPath(new URL('../../connection-server/src/main.ts', import.meta.url));

interface ServerChild {
  readonly proc: ChildProcess;
  readonly deviceUrl: string;
  readonly exited: Promise<unknown>;
}

/** A connection server as its own process (`node src/main.ts`), so the test can kill -9 it. */
async function spawnServer(h: ApiHarness, serverId: string, jwtSecret: string): Promise<ServerChild> {
  const proc = spawn(process.execPath, [SERVER_MAIN], {
    env: {
      PATH: process.env['PATH'] ?? '',
      PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: testInfra().redisUrl,
      PUSHLINE_TOPIC_PREFIX: `${h.prefix}.`,
      PUSHLINE_KEY_PREFIX: h.keyPrefix,
      PUSHLINE_KAFKA_PARTITIONS: '3',
      PUSHLINE_INTERNAL_TOKEN: h.internalToken,
      PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
      PUSHLINE_SERVER_ID: serverId,
      PUSHLINE_HOST: '127.0.0.1',
      PUSHLINE_PORT: '0',
      PUSHLINE_INTERNAL_PORT: '0',
      PUSHLINE_LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(proc, 'exit');
  let out = '';
  const started = new Promise<string>((resolve, reject) => {
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      for (const line of out.split('\n')) {
        if (line.includes('connection server started')) {
          resolve((JSON.parse(line) as { deviceUrl: string }).deviceUrl);
        }
      }
    });
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    void exited.then(() => reject(new Error(`connection server exited early:\n${out}`)));
  });
  try {
    return { proc, deviceUrl: await within(started, 30_000, 'the connection server to start'), exited };
  } catch (err) {
    // Not the caller's yet: a server that never started must not keep the test process alive.
    proc.kill('SIGKILL');
    throw err;
  }
}

describe('direct push when the connection server dies mid-request (kill -9)', () => {
  let h: ApiHarness;
  let server: ServerChild | undefined;
  const sockets: Socket[] = [];
  before(async () => {
    h = await startApi({ label: 'crash' });
  });
  after(async () => {
    for (const s of sockets) s.disconnect();
    if (server && server.proc.exitCode === null && server.proc.signalCode === null) {
      server.proc.kill('SIGKILL');
      await server.exited;
    }
    await h.close();
  });

  it('answers 504 timeout (server_lost), never 404 not_connected, for a message the device received', async () => {
    const jwtSecret = testSecret();
    server = await spawnServer(h, `${h.prefix}-srv`, jwtSecret);
    const token = await new SignJWT({ uid: 'crash-user' })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('crash-device')
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(jwtSecret));
    const device = io(server.deviceUrl, { transports: ['websocket'], reconnection: false, auth: { token } });
    sockets.push(device);
    const killed = server;
    const received: DeviceMessage[] = [];
    // The device gets the message; its server dies before the ack can travel back.
    device.on(DeviceEvents.message, (raw: unknown, ack: (answer: unknown) => void) => {
      const msg = DeviceMessage.parse(raw);
      received.push(msg);
      if (msg.id === 'crash-m1') killed.proc.kill('SIGKILL');
      else ack({ ok: true });
    });
    await within(
      new Promise<void>((resolve, reject) => {
        device.once('connect', () => resolve());
        device.once('connect_error', reject);
      }),
      5_000,
      'the device to connect',
    );
    await waitUntil(async () => (await h.registry.lookup('crash-device')) !== null, {
      what: 'the device registered',
    });
    // A first push warms the API's pooled connection to the server, as steady traffic does.
    const warm = await call(h.url, 'POST', '/v1/devices/crash-device/messages', {
      key: h.keys.push,
      body: { id: 'warm-m0', payload: 0 },
    });
    assert.equal(warm.status, 200, JSON.stringify(warm.body));

    const res = await call(h.url, 'POST', '/v1/devices/crash-device/messages', {
      key: h.keys.push,
      body: { id: 'crash-m1', payload: { n: 1 }, timeoutMs: 10_000 },
    });
    await killed.exited;
    assert.deepEqual(
      received.map((m) => m.id),
      ['warm-m0', 'crash-m1'],
      'the device received the message',
    );
    assert.equal(res.status, 504, JSON.stringify(res.body));
    assert.deepEqual(
      {
        outcome: (res.body as { outcome: string }).outcome,
        reason: (res.body as { reason?: string }).reason,
      },
      { outcome: 'timeout', reason: 'server_lost' },
    );
  });
});
