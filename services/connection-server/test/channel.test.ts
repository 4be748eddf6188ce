import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ChannelDeliveryTransport } from '@pushline/delivery';
import { DeviceMessage, type DeliverRequest } from '@pushline/protocol';
import { createMetricsRegistry, silentLogger, type Registry } from '@pushline/telemetry';
import { waitUntil, within } from '@pushline/testkit';
import { createWorld, metricValue, type ClientSocket, type TestWorld } from './helpers.ts';

const SERVER_MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

type Ack = (answer: unknown) => void;

function request(deviceId: string, overrides: Partial<DeliverRequest> = {}): DeliverRequest {
  return {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    deviceId,
    payload: { n: 1 },
    source: 'async',
    timeoutMs: 2_000,
    ...overrides,
  };
}

/** A connection server as its own process, so the test can kill -9 or SIGSTOP it for real. */
interface ServerChild {
  readonly proc: ChildProcess;
  readonly deviceUrl: string;
  readonly internalUrl: string;
  readonly exited: Promise<unknown>;
}

async function spawnServer(world: TestWorld, serverId: string): Promise<ServerChild> {
  const proc = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', SERVER_MAIN], {
    env: {
      PATH: process.env['PATH'] ?? '',
      ...world.env({ PUSHLINE_SERVER_ID: serverId, PUSHLINE_LOG_LEVEL: 'info' }),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = once(proc, 'exit');
  let out = '';
  const started = new Promise<{ deviceUrl: string; internalUrl: string }>((resolve, reject) => {
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      for (const line of out.split('\n')) {
        if (line.includes('connection server started')) {
          resolve(JSON.parse(line) as { deviceUrl: string; internalUrl: string });
        }
      }
    });
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    void exited.then(() => reject(new Error(`connection server exited early:\n${out}`)));
  });
  const urls = await within(started, 30_000, 'the connection server to start');
  return { proc, exited, ...urls };
}

describe('the internal channel to real connection servers', () => {
  let world: TestWorld;
  let metrics: Registry;
  let transport: ChannelDeliveryTransport;
  const children: ServerChild[] = [];

  beforeEach(async () => {
    world = await createWorld('channel');
    metrics = createMetricsRegistry({}, false);
    transport = new ChannelDeliveryTransport({
      internalToken: world.internalToken,
      logger: silentLogger(),
      metrics,
      timeoutMarginMs: 300,
    });
  });
  afterEach(async () => {
    await transport.close();
    for (const child of children.splice(0)) {
      if (child.proc.exitCode === null && child.proc.signalCode === null) {
        child.proc.kill('SIGCONT');
        child.proc.kill('SIGKILL');
        await child.exited;
      }
    }
    await world.close();
  });

  async function device(
    url: string,
    deviceId: string,
    ack: ((msg: DeviceMessage, ack: Ack) => void) | undefined,
  ) {
    const socket: ClientSocket = await world.connect(url, await world.token({ sub: deviceId }), {}, (s) =>
      s.on('message', (raw: unknown, answer: Ack) => ack?.(DeviceMessage.parse(raw), answer)),
    );
    await waitUntil(async () => (await world.registry.lookup(deviceId)) !== null, {
      what: `${deviceId} registered`,
    });
    return socket;
  }

  it('streams each outcome as its device acks: a fast device is settled while another holds its ack', async () => {
    const { server, metrics: served } = await world.startServer();
    let release: (() => void) | undefined;
    await device(server.deviceUrl, 'dev-slow', (_msg, ack) => (release = () => ack({ ok: true })));
    await device(server.deviceUrl, 'dev-fast', (_msg, ack) => ack({ ok: true }));
    const slow = transport.deliver(server.internalUrl, request('dev-slow', { timeoutMs: 10_000 }));
    const fast = transport.deliver(server.internalUrl, request('dev-fast'));
    const nobody = transport.deliver(server.internalUrl, request('dev-nobody'));
    assert.equal((await fast).outcome, 'delivered');
    assert.equal((await nobody).outcome, 'not_connected');
    assert.equal(release !== undefined, true, 'the slow device holds its message unacked');
    release?.();
    assert.equal((await slow).outcome, 'delivered');
    assert.equal(transport.openChannels, 1);
    assert.equal(
      await metricValue(served, 'pushline_channel_served_total', { op: 'deliver', result: 'ok' }),
      3,
    );
  });

  it('a server killed with -9 mid-call: timeout / server_lost for what it had, server_unreachable after', async () => {
    const child = await spawnServer(world, `${world.prefix}-kill`);
    children.push(child);
    const received: string[] = [];
    await device(child.deviceUrl, 'dev-k', (msg, ack) => {
      received.push(msg.id);
      // The device has the message; its server dies before the ack can travel back.
      if (msg.id === 'kill-m1') child.proc.kill('SIGKILL');
      else ack({ ok: true });
    });
    assert.equal(
      (await transport.deliver(child.internalUrl, request('dev-k', { messageId: 'warm-m0' }))).outcome,
      'delivered',
    );
    const lost = await transport.deliver(
      child.internalUrl,
      request('dev-k', { messageId: 'kill-m1', timeoutMs: 10_000 }),
    );
    await child.exited;
    assert.deepEqual(received, ['warm-m0', 'kill-m1'], 'the device received the message');
    assert.deepEqual([lost.outcome, lost.reason], ['timeout', 'server_lost']);
    // Nothing listens any more: the next call never leaves, so it is known not delivered.
    const refused = await transport.deliver(child.internalUrl, request('dev-k', { messageId: 'after-m2' }));
    assert.deepEqual([refused.outcome, refused.reason], ['not_connected', 'server_unreachable']);
    assert.equal(await metricValue(metrics, 'pushline_channel_calls_total', { result: 'lost' }), 1);
  });

  it('a server stopped with SIGSTOP: each call ends on its own deadline as timeout / server_timeout', async () => {
    const child = await spawnServer(world, `${world.prefix}-stop`);
    children.push(child);
    await device(child.deviceUrl, 'dev-s', (_msg, ack) => ack({ ok: true }));
    assert.equal((await transport.deliver(child.internalUrl, request('dev-s'))).outcome, 'delivered');
    child.proc.kill('SIGSTOP');
    const started = performance.now();
    const [short, long] = await Promise.all([
      transport.deliver(child.internalUrl, request('dev-s', { timeoutMs: 200 })),
      transport.deliver(child.internalUrl, request('dev-s', { timeoutMs: 1_500 })),
    ]);
    assert.deepEqual([short.outcome, short.reason], ['timeout', 'server_timeout']);
    assert.deepEqual([long.outcome, long.reason], ['timeout', 'server_timeout']);
    assert.ok(short.latencyMs < long.latencyMs, 'each call has its own deadline');
    assert.ok(performance.now() - started < 10_000);
    child.proc.kill('SIGCONT');
    // The server catches up: the channel is still there and carries the next call.
    const after = await transport.deliver(child.internalUrl, request('dev-s'));
    assert.equal(after.outcome, 'delivered');
  });

  it('reconnects to a server that came back on the same port', async () => {
    const first = await world.startServer({ env: { PUSHLINE_SERVER_ID: `${world.prefix}-r1` } });
    const port = new URL(first.server.internalUrl).port;
    await device(first.server.deviceUrl, 'dev-r', (_msg, ack) => ack({ ok: true }));
    assert.equal((await transport.deliver(first.server.internalUrl, request('dev-r'))).outcome, 'delivered');
    const url = first.server.internalUrl;
    await first.server.close();
    const gone = await transport.deliver(url, request('dev-r'));
    assert.equal(gone.outcome, 'not_connected');
    const second = await world.startServer({
      env: { PUSHLINE_SERVER_ID: `${world.prefix}-r2`, PUSHLINE_INTERNAL_PORT: port },
    });
    await device(second.server.deviceUrl, 'dev-r2', (_msg, ack) => ack({ ok: true }));
    const back = await waitUntil(
      async () => {
        const r = await transport.deliver(url, request('dev-r2'));
        return r.outcome === 'delivered' ? r : undefined;
      },
      { what: 'a delivery over a new channel', timeoutMs: 10_000 },
    );
    assert.equal(back.outcome, 'delivered');
  });
});
