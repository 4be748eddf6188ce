import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import {
  CHANNEL_PATH,
  CHANNEL_PROTOCOL,
  type ChannelCall,
  type DeliverRequest,
  type DeliverResult,
} from '@pushline/protocol';
import { createMetricsRegistry, silentLogger, type Registry } from '@pushline/telemetry';
import { waitUntil, within } from '@pushline/testkit';
import {
  ChannelDeliveryTransport,
  ChannelServer,
  DeliveryTransportError,
  InternalAuthError,
  type ChannelTransportOptions,
} from '@pushline/delivery';
import {
  closedPortUrl,
  startRawPeer,
  startStubServer,
  type RawPeer,
  type StubServer,
} from './channel-stub.ts';

const TOKEN = 'internal-token-for-tests-0123456789';

function request(overrides: Partial<DeliverRequest> = {}): DeliverRequest {
  return {
    messageId: 'm-1',
    deviceId: 'dev-1',
    connectionId: 'c-1',
    payload: { hello: 'world' },
    source: 'direct',
    timeoutMs: 2000,
    ...overrides,
  };
}

async function counted(metrics: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = await metrics.getSingleMetric(name)?.get();
  return (metric?.values ?? [])
    .filter((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value))
    .reduce((n, v) => n + v.value, 0);
}

describe('the internal channel', () => {
  const cleanup: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const step of cleanup.reverse()) await step();
    cleanup.length = 0;
  });
  function transport(options: Partial<ChannelTransportOptions> = {}): ChannelDeliveryTransport {
    const t = new ChannelDeliveryTransport({ internalToken: TOKEN, logger: silentLogger(), ...options });
    cleanup.push(() => t.close());
    return t;
  }
  async function stub(options: { window?: number } = {}): Promise<StubServer> {
    const s = await startStubServer({ token: TOKEN, serverId: 'srv', ...options });
    cleanup.push(() => s.close());
    return s;
  }
  async function raw(options: { status?: number; window?: number } = {}): Promise<RawPeer> {
    const p = await startRawPeer(options);
    cleanup.push(() => p.close());
    return p;
  }

  it('carries deliveries, broadcasts and replaced notices over one connection, each with its own outcome', async () => {
    const server = await stub();
    server.connections.set('dev-1', 'c-1');
    server.broadcastDelivered = 7;
    const metrics = createMetricsRegistry({}, false);
    const t = transport({ metrics });
    const [a, b, c, d] = await Promise.all([
      t.deliver(server.url, request()),
      t.deliver(server.url, request({ messageId: 'm-2', connectionId: 'c-old' })),
      t.broadcast(server.url, { messageId: 'b-1', topic: 'news', payload: 1, timeoutMs: 1000 }),
      t.replaced(server.url, { deviceId: 'dev-1', connectionId: 'c-1' }),
    ]);
    assert.deepEqual(a, { outcome: 'delivered', latencyMs: 1 });
    assert.equal(b.outcome, 'not_connected');
    assert.equal(c.delivered, 7);
    assert.deepEqual(d, { closed: true });
    assert.equal(server.channels, 1, 'one channel for every call');
    assert.equal(
      await t.deliver(server.url, request({ messageId: 'm-3' })).then((r) => r.outcome),
      'delivered',
    );
    assert.equal(server.channels, 1, 'the channel stays open for later calls');
    assert.equal(await counted(metrics, 'pushline_channel_calls_total', { op: 'deliver', result: 'ok' }), 3);
    assert.equal(await counted(metrics, 'pushline_channel_connects_total', { result: 'ok' }), 1);
  });

  it('sends the calls of one turn as one frame and settles each as its result arrives', async () => {
    const peer = await raw();
    const t = transport();
    const settled: string[] = [];
    const calls = ['m-1', 'm-2', 'm-3'].map((id) =>
      t.deliver(peer.url, request({ messageId: id })).then((r) => {
        settled.push(`${id}:${r.outcome}`);
        return r;
      }),
    );
    const frame = await within(peer.nextFrame(), 5000, 'the calls frame');
    assert.deepEqual(
      frame.map((c) => (c.op === 'deliver' ? c.req.messageId : c.op)),
      ['m-1', 'm-2', 'm-3'],
    );
    const ws = peer.sockets[0] as WebSocket;
    const [first, second, third] = frame as ChannelCall[];
    // The second item's result first: it settles while the others still wait.
    peer.send(ws, {
      results: [{ id: second?.id, deliver: { outcome: 'rejected', latencyMs: 2, reason: 'busy' } }],
    });
    await waitUntil(() => settled.length === 1, { what: 'the second call settled alone' });
    assert.deepEqual(settled, ['m-2:rejected']);
    peer.send(ws, {
      results: [
        { id: first?.id, deliver: { outcome: 'delivered', latencyMs: 1 } },
        { id: third?.id, deliver: { outcome: 'timeout', latencyMs: 2000 } },
      ],
    });
    const results = await Promise.all(calls);
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['delivered', 'rejected', 'timeout'],
    );
  });

  it('gives each call the trace context it was made in', async () => {
    const peer = await raw();
    const t = transport();
    const pending = t.deliver(
      peer.url,
      request({ trace: { traceparent: '00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01' } }),
    );
    const [call] = await peer.nextFrame();
    assert.equal(call?.op, 'deliver');
    assert.equal(
      call?.op === 'deliver' ? call.req.trace?.traceparent : undefined,
      '00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01',
    );
    peer.send(peer.sockets[0] as WebSocket, {
      results: [{ id: call?.id, deliver: { outcome: 'delivered', latencyMs: 1 } }],
    });
    assert.equal((await pending).outcome, 'delivered');
  });

  it('reports a server it cannot connect to as not_connected / server_unreachable, at once while its backoff runs', async () => {
    const url = await closedPortUrl();
    const metrics = createMetricsRegistry({}, false);
    const t = transport({ metrics, reconnectBaseMs: 60_000, reconnectMaxMs: 60_000 });
    const result = await t.deliver(url, request());
    assert.deepEqual([result.outcome, result.reason], ['not_connected', 'server_unreachable']);
    await assert.rejects(
      t.broadcast(url, { messageId: 'b', topic: 'news', payload: 1, timeoutMs: 1000 }),
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'server_unreachable',
    );
    assert.equal((await t.deliver(url, request({ messageId: 'm-2' }))).reason, 'server_unreachable');
    assert.equal(
      await counted(metrics, 'pushline_channel_connects_total', { result: 'unreachable' }),
      1,
      'calls during the backoff do not try to connect again',
    );
  });

  it('throws InternalAuthError when the server refuses the token, and names a server without the channel incompatible', async () => {
    const server = await stub();
    const wrong = transport({
      internalToken: 'wrong-token-0123456789abcdef',
    } as Partial<ChannelTransportOptions>);
    await assert.rejects(wrong.deliver(server.url, request()), InternalAuthError);
    const without = await raw({ status: 404 });
    await assert.rejects(
      transport().deliver(without.url, request()),
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'incompatible',
    );
  });

  it('refuses a caller without the token or the channel version at the handshake', async () => {
    const server = await stub();
    const url = `${server.url.replace('http', 'ws')}${CHANNEL_PATH}`;
    const status = (protocol: string, token: string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(url, protocol, { headers: { authorization: `Bearer ${token}` } });
        ws.on('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.on('open', () => {
          resolve(101);
          ws.close();
        });
        ws.on('error', () => {});
      });
    assert.equal(await status(CHANNEL_PROTOCOL, 'nope'), 401);
    assert.equal(await status('pushline-channel.v0', TOKEN), 426);
    assert.equal(await status(CHANNEL_PROTOCOL, TOKEN), 101);
  });

  it('settles calls in flight on a connection that breaks as timeout / server_lost, and sends the next call on a new one', async () => {
    const peer = await raw();
    const t = transport();
    const delivery = t.deliver(peer.url, request());
    const broadcast = t.broadcast(peer.url, { messageId: 'b', topic: 'news', payload: 1, timeoutMs: 1000 });
    await peer.nextFrame();
    (peer.sockets[0] as WebSocket).terminate();
    const lost = await delivery;
    assert.deepEqual([lost.outcome, lost.reason], ['timeout', 'server_lost']);
    await assert.rejects(
      broadcast,
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'server_lost',
    );
    // Reconnects for the next call.
    const next = t.deliver(peer.url, request({ messageId: 'm-2' }));
    const [call] = await within(peer.nextFrame(), 5000, 'a frame on a new channel');
    assert.equal(peer.sockets.length, 2);
    peer.send(peer.sockets[1] as WebSocket, {
      results: [{ id: call?.id, deliver: { outcome: 'delivered', latencyMs: 1 } }],
    });
    assert.equal((await next).outcome, 'delivered');
  });

  it('times each call out on its own deadline while the others still get their results', async () => {
    const peer = await raw();
    const t = transport({ timeoutMarginMs: 50 });
    const slow = t.deliver(peer.url, request({ messageId: 'slow', timeoutMs: 100 }));
    const fast = t.deliver(peer.url, request({ messageId: 'fast', timeoutMs: 10_000 }));
    const frame = await peer.nextFrame();
    const timedOut = await slow;
    assert.deepEqual([timedOut.outcome, timedOut.reason], ['timeout', 'server_timeout']);
    const fastCall = frame.find((c) => c.op === 'deliver' && c.req.messageId === 'fast');
    peer.send(peer.sockets[0] as WebSocket, {
      results: [{ id: fastCall?.id, deliver: { outcome: 'delivered', latencyMs: 1 } }],
    });
    assert.equal((await fast).outcome, 'delivered');
  });

  it("keeps at most the server's credit of calls unanswered and sends the rest as credit returns", async () => {
    const peer = await raw({ window: 2 });
    const t = transport({ maxQueuedPerServer: 4 });
    const calls = ['a', 'b', 'c', 'd'].map((id) => t.deliver(peer.url, request({ messageId: id })));
    const first = await peer.nextFrame();
    assert.equal(first.length, 2, 'only the credit goes out');
    calls.push(...['e', 'f'].map((id) => t.deliver(peer.url, request({ messageId: id }))));
    await assert.rejects(
      t.deliver(peer.url, request({ messageId: 'g' })),
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'overloaded',
      'past the bound on waiting calls a call is refused at once',
    );
    const ws = peer.sockets[0] as WebSocket;
    let frame = first;
    const sent = [...first];
    while (sent.length < 6) {
      const next = peer.nextFrame();
      peer.send(ws, {
        results: frame.map((c) => ({ id: c.id, deliver: { outcome: 'delivered', latencyMs: 1 } })),
      });
      frame = await within(next, 5000, 'the waiting calls');
      assert.equal(frame.length, 2, 'each frame within the credit');
      sent.push(...frame);
    }
    peer.send(ws, {
      results: frame.map((c) => ({ id: c.id, deliver: { outcome: 'delivered', latencyMs: 1 } })),
    });
    assert.deepEqual(
      sent.map((c) => (c.op === 'deliver' ? c.req.messageId : '')),
      ['a', 'b', 'c', 'd', 'e', 'f'],
    );
    assert.deepEqual(
      (await Promise.all(calls)).map((r) => r.outcome),
      Array(6).fill('delivered'),
    );
  });

  it('refuses a call that waited for credit past its deadline as overloaded: it never left', async () => {
    const peer = await raw({ window: 1 });
    const t = transport({ timeoutMarginMs: 50 });
    const held = t.deliver(peer.url, request({ messageId: 'held', timeoutMs: 10_000 }));
    await peer.nextFrame();
    await assert.rejects(
      t.deliver(peer.url, request({ messageId: 'waits', timeoutMs: 100 })),
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'overloaded',
    );
    assert.equal(peer.frames.length, 1, 'the waiting call was never written');
    (peer.sockets[0] as WebSocket).terminate();
    assert.equal((await held).reason, 'server_lost');
  });

  it('drops a server that sends a frame outside the contract: its calls may have been acted on', async () => {
    const peer = await raw();
    const t = transport();
    const delivery = t.deliver(peer.url, request());
    await peer.nextFrame();
    (peer.sockets[0] as WebSocket).send('{"results":[{"id":"x"}]}');
    const result = await delivery;
    assert.deepEqual([result.outcome, result.reason], ['timeout', 'server_lost']);
  });

  it('rejects calls in flight when the transport closes, and close() is idempotent', async () => {
    const peer = await raw();
    const t = transport();
    const delivery = t.deliver(peer.url, request());
    await peer.nextFrame();
    const rejected = assert.rejects(
      delivery,
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'network',
    );
    await t.close();
    await t.close();
    await rejected;
    await assert.rejects(t.deliver(peer.url, request()), DeliveryTransportError);
  });

  it('answers calls outside the contract one by one and handles the valid calls of the same frame', async () => {
    const server = await stub();
    server.connections.set('dev-1', 'c-1');
    const url = `${server.url.replace('http', 'ws')}${CHANNEL_PATH}`;
    const ws = new WebSocket(url, CHANNEL_PROTOCOL, { headers: { authorization: `Bearer ${TOKEN}` } });
    cleanup.push(async () => ws.terminate());
    await once(ws, 'open');
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = [deep];
    const results = new Promise<{ id: number; error?: { code: string }; deliver?: DeliverResult }[]>(
      (resolve) => {
        const all: { id: number; error?: { code: string }; deliver?: DeliverResult }[] = [];
        ws.on('message', (data: Buffer) => {
          all.push(...(JSON.parse(data.toString()) as { results: typeof all }).results);
          if (all.length === 3) resolve(all);
        });
      },
    );
    ws.send(
      JSON.stringify({
        calls: [
          { id: 1, op: 'deliver', req: request() },
          { id: 2, op: 'deliver', req: { ...request(), deviceId: 'has space' } },
          { id: 3, op: 'deliver', req: request({ payload: deep }) },
        ],
      }),
    );
    const byId = new Map((await within(results, 5000, 'three results')).map((r) => [r.id, r]));
    assert.equal(byId.get(1)?.deliver?.outcome, 'delivered');
    assert.equal(byId.get(2)?.error?.code, 'invalid_request');
    assert.equal(
      byId.get(3)?.error?.code,
      'invalid_request',
      'a payload deeper than PUSHLINE_MAX_JSON_DEPTH',
    );
    assert.equal(server.calls.length, 1, 'only the valid call reached the handler');
    ws.send('not json');
    const [code] = (await once(ws, 'close')) as [number];
    assert.equal(code, 1007, 'a frame that is not JSON closes the channel');
  });

  it("answers calls beyond a caller's credit with window_exceeded", async () => {
    const server = await stub({ window: 1 });
    server.onDeliver = () => new Promise(() => {});
    const url = `${server.url.replace('http', 'ws')}${CHANNEL_PATH}`;
    const ws = new WebSocket(url, CHANNEL_PROTOCOL, { headers: { authorization: `Bearer ${TOKEN}` } });
    cleanup.push(async () => ws.terminate());
    await once(ws, 'open');
    ws.send(
      JSON.stringify({
        calls: [
          { id: 1, op: 'deliver', req: request() },
          { id: 2, op: 'deliver', req: request() },
        ],
      }),
    );
    const [data] = (await once(ws, 'message')) as [Buffer];
    assert.deepEqual(JSON.parse(data.toString()), {
      results: [{ id: 2, error: { code: 'window_exceeded', message: 'more than 1 calls unanswered' } }],
    });
  });

  it('runs over TLS with the CA from configuration, and refuses a server it cannot verify', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pushline-channel-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    const cert = readFileSync(join(dir, 'cert.pem'));
    const https = createTlsServer({ cert, key: readFileSync(join(dir, 'key.pem')) });
    const channel = new ChannelServer({
      server: https,
      internalToken: TOKEN,
      maxJsonDepth: 32,
      logger: silentLogger(),
      handlers: {
        deliver: async () => ({ outcome: 'delivered', latencyMs: 3 }),
        broadcast: async () => ({ delivered: 0, latencyMs: 0 }),
        replaced: () => false,
      },
    });
    channel.start();
    https.listen(0, '127.0.0.1');
    await once(https, 'listening');
    cleanup.push(async () => {
      await channel.close();
      await new Promise<void>((resolve) => https.close(() => resolve()));
    });
    const url = `https://127.0.0.1:${(https.address() as AddressInfo).port}`;
    assert.deepEqual(await transport({ tlsCa: cert }).deliver(url, request()), {
      outcome: 'delivered',
      latencyMs: 3,
    });
    const untrusted = await transport().deliver(url, request());
    assert.deepEqual([untrusted.outcome, untrusted.reason], ['not_connected', 'server_unreachable']);
  });
});
