import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { CoalescingDeliveryTransport, HttpDeliveryTransport } from '@pushline/delivery';
import {
  DELIVER_BATCH_MAX,
  DELIVER_BATCH_STREAM_TYPE,
  DeliverBatchLine,
  DeliverBatchResult,
  DeviceMessage,
  type DeliverRequest,
} from '@pushline/protocol';
import { silentLogger } from '@pushline/telemetry';
import { createWorld, metricValue, type ClientSocket, type TestWorld } from './helpers.ts';

/** Every item's result, in request order; rejects with the first error. */
const deliverAll = (transport: HttpDeliveryTransport, serverUrl: string, reqs: readonly DeliverRequest[]) =>
  Promise.all(transport.deliverEach(serverUrl, reqs));

type Ack = (answer: unknown) => void;

/** A device that answers every message with `answer` (or never, when undefined), recording what it saw. */
function answering(
  device: ClientSocket,
  answer: ((msg: DeviceMessage) => unknown) | undefined,
): DeviceMessage[] {
  const seen: DeviceMessage[] = [];
  device.on('message', (msg: unknown, ack: Ack) => {
    const parsed = DeviceMessage.parse(msg);
    seen.push(parsed);
    if (answer) ack(answer(parsed));
  });
  return seen;
}

function request(deviceId: string, overrides: Partial<DeliverRequest> = {}): DeliverRequest {
  return {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    deviceId,
    payload: { to: deviceId },
    source: 'async',
    timeoutMs: 2_000,
    ...overrides,
  };
}

describe('batch delivery (POST /internal/v1/deliver-batch)', () => {
  let world: TestWorld;
  let transport: HttpDeliveryTransport;

  beforeEach(async () => {
    world = await createWorld('batch');
    transport = new HttpDeliveryTransport({ internalToken: world.internalToken, logger: silentLogger() });
  });
  afterEach(async () => {
    await transport.close();
    await world.close();
  });

  async function post(url: string, body: unknown, token: string | undefined = world.internalToken) {
    const res = await fetch(`${url}/internal/v1/deliver-batch`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    });
    return { status: res.status, type: res.headers.get('content-type') };
  }

  it('deliverEach gives each item its own outcome and timeout, in item order', async () => {
    const { server, metrics } = await world.startServer();
    const ok = answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-ok' })), () => ({
      ok: true,
    }));
    answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-no' })), () => ({
      ok: false,
      reason: 'busy',
    }));
    const mute = answering(
      await world.connect(server.deviceUrl, await world.token({ sub: 'dev-mute' })),
      undefined,
    );

    const reqs = [
      request('dev-mute', { timeoutMs: 300 }),
      request('dev-ok', { payload: { n: 1 } }),
      request('nobody'),
      request('dev-no'),
    ];
    const started = performance.now();
    const results = await deliverAll(transport, server.internalUrl, reqs);
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['timeout', 'delivered', 'not_connected', 'rejected'],
    );
    assert.equal(results[3]?.reason, 'busy');
    // The slow item does not hold the others back on the device side: each got its message.
    assert.deepEqual(ok[0]?.payload, { n: 1 });
    assert.equal(mute.length, 1);
    assert.ok(performance.now() - started < 2_000, 'the batch ends with its slowest item');
    assert.equal(await metricValue(metrics, 'pushline_server_deliveries_total'), 4);
    assert.equal(
      await metricValue(metrics, 'pushline_internal_requests_total', {
        route: 'deliverBatch',
        status: '200',
      }),
      1,
    );
  });

  it('streams each outcome as its device acks: a fast device is settled while another holds its ack', async () => {
    const { server, metrics } = await world.startServer();
    let releaseHeld = () => {};
    const heldAck = new Promise<void>((resolve) => (releaseHeld = resolve));
    let heldGotIt = () => {};
    const heldReceived = new Promise<void>((resolve) => (heldGotIt = resolve));
    const held = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-held' }));
    held.on('message', (_msg: unknown, ack: Ack) => {
      heldGotIt();
      void heldAck.then(() => ack({ ok: true }));
    });
    answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-fast' })), () => ({
      ok: true,
    }));

    const [slow, fast] = transport.deliverEach(server.internalUrl, [
      request('dev-held', { timeoutMs: 10_000 }),
      request('dev-fast'),
    ]);
    assert.ok(slow && fast);
    let slowSettled = false;
    void slow.then(() => (slowSettled = true));
    await heldReceived;
    assert.equal((await fast).outcome, 'delivered');
    assert.equal(slowSettled, false, 'the held device has not acked, so its item is still open');
    releaseHeld();
    assert.equal((await slow).outcome, 'delivered');
    assert.equal(
      await metricValue(metrics, 'pushline_internal_requests_total', { route: 'deliverBatch' }),
      1,
      'both items went in one exchange',
    );
  });

  it('answers a caller that does not ask for the stream (an older one) with one JSON body', async () => {
    const { server } = await world.startServer();
    answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-a' })), () => ({
      ok: true,
    }));
    const items = [request('nobody'), request('dev-a')];
    const ask = (accept: string | undefined) =>
      fetch(`${server.internalUrl}/internal/v1/deliver-batch`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${world.internalToken}`,
          ...(accept ? { accept } : {}),
        },
        body: JSON.stringify({ items }),
      });

    const old = await ask(undefined);
    assert.equal(old.headers.get('content-type'), 'application/json');
    const { results } = DeliverBatchResult.parse(await old.json());
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['not_connected', 'delivered'],
    );

    const refused = await ask('application/x-ndjson;q=0, application/json');
    assert.equal(refused.headers.get('content-type'), 'application/json');
    await refused.body?.cancel();

    const streamed = await ask('application/x-ndjson, application/json;q=0.5');
    assert.equal(streamed.headers.get('content-type'), DELIVER_BATCH_STREAM_TYPE);
    const lines = (await streamed.text())
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => DeliverBatchLine.parse(JSON.parse(l)));
    assert.deepEqual(lines.map((l) => [l.index, l.result.outcome]).sort(), [
      [0, 'not_connected'],
      [1, 'delivered'],
    ]);
  });

  it('refuses bad tokens, empty and oversized batches, and items without a payload', async () => {
    const { server } = await world.startServer();
    assert.equal(
      (await post(server.internalUrl, { items: [request('a')] }, 'wrong-token-wrong')).status,
      401,
    );
    const empty = await post(server.internalUrl, { items: [] });
    assert.equal(empty.status, 400);
    assert.equal(empty.type, 'application/problem+json');
    const tooMany = Array.from({ length: DELIVER_BATCH_MAX + 1 }, (_, i) => request(`d${i}`));
    assert.equal((await post(server.internalUrl, { items: tooMany })).status, 400);
    const { payload: _dropped, ...noPayload } = request('a');
    assert.equal((await post(server.internalUrl, { items: [noPayload] })).status, 400, 'payload is required');
  });

  it('coalesces concurrent deliver calls into one batch per server; each call gets its own result', async () => {
    const a = await world.startServer();
    const b = await world.startServer();
    const ids = Array.from({ length: 10 }, (_, i) => `dev-${i}`);
    const seen = new Map<string, DeviceMessage[]>();
    for (const [i, id] of ids.entries()) {
      const server = i % 2 === 0 ? a.server : b.server;
      const device = await world.connect(server.deviceUrl, await world.token({ sub: id }));
      seen.set(
        id,
        answering(device, () => ({ ok: true })),
      );
    }
    const coalescing = new CoalescingDeliveryTransport({ transport });
    const results = await Promise.all(
      ids.map((id, i) =>
        coalescing.deliver(i % 2 === 0 ? a.server.internalUrl : b.server.internalUrl, request(id)),
      ),
    );
    assert.ok(results.every((r) => r.outcome === 'delivered'));
    for (const id of ids) assert.equal(seen.get(id)?.length, 1, `${id} got its message once`);
    for (const { metrics } of [a, b]) {
      assert.equal(
        await metricValue(metrics, 'pushline_internal_requests_total', { route: 'deliverBatch' }),
        1,
      );
      assert.equal(await metricValue(metrics, 'pushline_internal_requests_total', { route: 'deliver' }), 0);
    }
    // A server that is gone answers every item of its batch as not connected, like `deliver`.
    const gone = b.server.internalUrl;
    await b.server.close();
    const after = await Promise.all([
      coalescing.deliver(gone, request('dev-1')),
      coalescing.deliver(gone, request('dev-3')),
    ]);
    assert.deepEqual(
      after.map((r) => [r.outcome, r.reason]),
      [
        ['not_connected', 'server_unreachable'],
        ['not_connected', 'server_unreachable'],
      ],
    );
    await coalescing.close();
  });
});
