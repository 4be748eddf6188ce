import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DeviceErrorAck, SendAck, SubscribeAck } from '@pushline/protocol';
import { waitUntil } from '@pushline/testkit';
import {
  createWorld,
  disconnected,
  metricValue,
  rawDevice,
  type ClientSocket,
  type RawDevice,
  type TestWorld,
} from './helpers.ts';

/** Emits `event` with `args` and an ack callback; resolves with the ack. */
function request(socket: ClientSocket, event: string, ...args: unknown[]): Promise<unknown> {
  return socket.timeout(5_000).emitWithAck(event, ...args);
}

function errorCode(ack: unknown): string {
  return DeviceErrorAck.parse(ack).error.code;
}

const nested = (depth: number): unknown => {
  let value: unknown = 'leaf';
  for (let i = 0; i < depth; i++) value = [value];
  return value;
};

describe('device requests', () => {
  let world: TestWorld;
  const raws: RawDevice[] = [];
  beforeEach(async () => {
    world = await createWorld('req');
  });
  afterEach(async () => {
    for (const raw of raws.splice(0)) raw.ws.terminate();
    await world.close();
  });

  it('acks every request: no body, extra arguments and unknown events get invalid_request', async () => {
    const { server, metrics } = await world.startServer();
    const device = await world.connect(
      server.deviceUrl,
      await world.token({ sub: 'dev-1', topics: ['news'] }),
    );

    assert.equal(errorCode(await request(device, 'subscribe')), 'invalid_request');
    assert.equal(errorCode(await request(device, 'unsubscribe')), 'invalid_request');
    assert.equal(errorCode(await request(device, 'send')), 'invalid_request');
    assert.equal(errorCode(await request(device, 'refresh_token')), 'invalid_request');
    assert.equal(
      errorCode(await request(device, 'subscribe', { topic: 'news' }, 'extra')),
      'invalid_request',
    );
    assert.equal(errorCode(await request(device, 'subscribe', null)), 'invalid_request');
    assert.equal(errorCode(await request(device, 'no-such-event', { topic: 'news' })), 'invalid_request');
    assert.equal(errorCode(await request(device, 'message', { id: 'x' })), 'invalid_request');
    assert.equal(
      await metricValue(metrics, 'pushline_device_requests_refused_total', { reason: 'unknown_event' }),
      2,
    );
    // The connection is still usable after all of it.
    assert.deepEqual(SubscribeAck.parse(await request(device, 'subscribe', { topic: 'news' })), {
      ok: true,
      topic: 'news',
    });
  });

  it('does not execute a request sent without an ack callback, and counts it', async () => {
    const { server, metrics } = await world.startServer();
    const device = await world.connect(
      server.deviceUrl,
      await world.token({ sub: 'dev-1', topics: ['news'] }),
    );
    device.emit('subscribe', { topic: 'news' });
    await waitUntil(
      async () =>
        (await metricValue(metrics, 'pushline_device_requests_refused_total', { reason: 'no_ack' })) === 1,
      { what: 'the ack-less request to be counted' },
    );
    const result = await server.broadcast({ messageId: 'm-1', topic: 'news', payload: 1, timeoutMs: 500 });
    assert.equal(result.delivered, 0);
  });

  it('rate-limits subscribe and unsubscribe per connection with the configured bucket', async () => {
    const { server, metrics } = await world.startServer({
      env: {
        PUSHLINE_DEVICE_REQUEST_RATE_PER_S: '1',
        PUSHLINE_DEVICE_REQUEST_BURST: '3',
        PUSHLINE_MAX_TOPICS_PER_DEVICE: '3',
      },
    });
    const device = await world.connect(
      server.deviceUrl,
      await world.token({ sub: 'dev-1', topics: ['t.*'] }),
    );
    const answers = [];
    for (const [event, topic] of [
      ['subscribe', 't.1'],
      ['subscribe', 't.2'],
      ['unsubscribe', 't.1'],
      ['subscribe', 't.3'],
    ] as const) {
      const ack = SubscribeAck.parse(await request(device, event, { topic }));
      answers.push(ack.ok ? 'ok' : ack.error.code);
    }
    assert.deepEqual(answers, ['ok', 'ok', 'ok', 'rate_limited']);
    // Another device has its own bucket.
    const other = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-2', topics: ['t.*'] }));
    assert.equal(SubscribeAck.parse(await request(other, 'subscribe', { topic: 't.3' })).ok, true);
    assert.equal(
      await metricValue(metrics, 'pushline_device_requests_refused_total', { reason: 'rate_limited' }),
      1,
    );
  });

  it('refuses a config whose request burst cannot restore every subscription at once', async () => {
    await assert.rejects(
      world.startServer({
        env: { PUSHLINE_DEVICE_REQUEST_BURST: '10', PUSHLINE_MAX_TOPICS_PER_DEVICE: '20' },
      }),
      /PUSHLINE_DEVICE_REQUEST_BURST/,
    );
  });

  it('answers a d2d payload nested deeper than PUSHLINE_MAX_JSON_DEPTH with invalid_request', async () => {
    const { server, metrics } = await world.startServer({ env: { PUSHLINE_MAX_JSON_DEPTH: '8' } });
    const sender = await world.connect(server.deviceUrl, await world.token({ sub: 'phone', uid: 'u1' }));
    const target = await world.connect(server.deviceUrl, await world.token({ sub: 'tablet', uid: 'u1' }));
    const received: unknown[] = [];
    target.on('message', (msg: unknown, ack: (a: unknown) => void) => {
      received.push(msg);
      ack({ ok: true });
    });
    await waitUntil(() => world.registry.lookup('tablet'), { what: 'registration' });

    const atLimit = SendAck.parse(await request(sender, 'send', { to: 'tablet', payload: nested(8) }));
    assert.equal(atLimit.ok && atLimit.outcome, 'delivered');
    for (const depth of [9, 100, 300]) {
      const ack = SendAck.parse(await request(sender, 'send', { to: 'tablet', payload: nested(depth) }));
      assert.equal(!ack.ok && ack.error.code, 'invalid_request', `depth ${depth}`);
    }
    // Deeper than socket.io-client can encode (its binary check recurses): sent as a raw frame.
    const raw = await rawDevice(server.deviceUrl, await world.token({ sub: 'raw-phone', uid: 'u1' }));
    raws.push(raw);
    const depth = 20_000;
    raw.ws.send(`427["send",{"to":"tablet","payload":${'['.repeat(depth)}${']'.repeat(depth)}}]`);
    const ackFrame = await raw.frame((f) => f.startsWith('437'));
    assert.equal(errorCode((JSON.parse(ackFrame.slice(3)) as unknown[])[0]), 'invalid_request');
    assert.equal(received.length, 1);
    assert.equal(await metricValue(metrics, 'pushline_d2d_total', { outcome: 'internal' }), 0);
    assert.equal(
      await metricValue(metrics, 'pushline_device_requests_refused_total', { reason: 'too_deep' }),
      4,
    );
  });

  it('closes a connection that sends a binary packet, shallow or deep, before socket.io rebuilds it', async () => {
    const { server } = await world.startServer();
    for (const json of [
      '["send",{"to":"x","payload":{"_placeholder":true,"num":0}}]',
      deepBinaryEvent(20_000),
    ]) {
      const raw = await rawDevice(server.deviceUrl, await world.token({ sub: 'raw-1' }));
      raws.push(raw);
      raw.ws.send(`451-0${json}`);
      raw.ws.send(Buffer.from([1, 2, 3]));
      await raw.closed();
      // Never answered: the packet was refused, not handled.
      assert.equal(raw.frames.filter((f) => f.startsWith('43')).length, 0);
    }
    // The server still serves devices.
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-ok' }));
    assert.ok(device.connected);
    device.disconnect();
    await disconnected(device);
  });
});

/** The JSON of a binary `send` event whose attachment placeholder sits `depth` arrays deep. */
function deepBinaryEvent(depth: number): string {
  return `["send",${'['.repeat(depth)}{"_placeholder":true,"num":0}${']'.repeat(depth)}]`;
}
