import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { SimpleSpanProcessor, InMemorySpanExporter } from '@opentelemetry/sdk-trace-base';
import { once } from 'node:events';
import { WebSocket } from 'ws';
import { ChannelDeliveryTransport, InternalAuthError, channelUrl } from '@pushline/delivery';
import {
  CHANNEL_PROTOCOL,
  DeviceMessage,
  type DeliverRequest,
  type DeliverResult,
  type StoredMessage,
} from '@pushline/protocol';
import {
  context,
  injectTraceHeaders,
  SpanKind,
  silentLogger,
  startTracing,
  trace,
  type TracingHandle,
} from '@pushline/telemetry';
import { waitUntil, within } from '@pushline/testkit';
import type { OfflineInbox } from '@pushline/offline-store';
import { createWorld, metricValue, type ClientSocket, type TestWorld } from './helpers.ts';

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

function request(overrides: Partial<DeliverRequest> = {}): DeliverRequest {
  return {
    messageId: `m-${Math.random().toString(36).slice(2)}`,
    deviceId: 'dev-1',
    payload: { hello: 'world' },
    source: 'direct',
    timeoutMs: 2_000,
    ...overrides,
  };
}

describe('local delivery', () => {
  const exporter = new InMemorySpanExporter();
  let tracing: TracingHandle;
  let world: TestWorld;

  before(() => {
    // The real SDK (context manager + W3C propagator) with spans kept in memory.
    tracing = startTracing({
      serviceName: 'connection-server-test',
      instanceId: 'test',
      spanProcessors: [new SimpleSpanProcessor(exporter)],
    });
  });
  after(async () => {
    await tracing.close();
  });
  beforeEach(async () => {
    world = await createWorld('delivery');
    exporter.reset();
  });
  afterEach(async () => {
    await world.close();
  });

  /** A delivery over the internal channel, as push-api and the processor make it. */
  async function channelDeliver(url: string, req: DeliverRequest, token = world.internalToken) {
    const transport = new ChannelDeliveryTransport({ internalToken: token, logger: silentLogger() });
    try {
      return await transport.deliver(url, req);
    } finally {
      await transport.close();
    }
  }

  /** Sends one raw calls frame on a channel of its own and returns the results, by call id. */
  async function rawFrame(url: string, text: string, expected: number) {
    const ws = new WebSocket(channelUrl(url), CHANNEL_PROTOCOL, {
      headers: { authorization: `Bearer ${world.internalToken}` },
    });
    try {
      await once(ws, 'open');
      const results = new Map<number, { deliver?: DeliverResult; error?: { code: string } }>();
      const done = new Promise<void>((resolve) =>
        ws.on('message', (data: Buffer) => {
          const frame = JSON.parse(data.toString()) as {
            results: { id: number; deliver?: DeliverResult; error?: { code: string } }[];
          };
          for (const r of frame.results) results.set(r.id, r);
          if (results.size >= expected) resolve();
        }),
      );
      ws.send(text);
      await within(done, 10_000, 'the results of a raw frame');
      return results;
    } finally {
      ws.terminate();
    }
  }

  it('deliverLocal reports delivered, rejected, timeout and not_connected', async () => {
    const { server, metrics } = await world.startServer();
    const acking = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-ok' }));
    const refusing = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-no' }));
    const silent = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-mute' }));
    const got = answering(acking, () => ({ ok: true }));
    answering(refusing, () => ({ ok: false, reason: 'busy' }));
    answering(silent, undefined);

    const delivered = await server.deliverLocal(request({ deviceId: 'dev-ok', payload: { n: 1 } }));
    assert.equal(delivered.outcome, 'delivered');
    assert.deepEqual(got[0]?.payload, { n: 1 });
    assert.ok(typeof got[0]?.sentAt === 'number');

    const rejected = await server.deliverLocal(request({ deviceId: 'dev-no' }));
    assert.equal(rejected.outcome, 'rejected');
    assert.equal(rejected.reason, 'busy');

    const timedOut = await server.deliverLocal(request({ deviceId: 'dev-mute', timeoutMs: 200 }));
    assert.equal(timedOut.outcome, 'timeout');
    assert.ok(timedOut.latencyMs >= 150);

    const absent = await server.deliverLocal(request({ deviceId: 'dev-absent' }));
    assert.equal(absent.outcome, 'not_connected');
    const record = await waitUntil(() => world.registry.lookup('dev-ok'), { what: 'record' });
    const stale = await server.deliverLocal(request({ deviceId: 'dev-ok', connectionId: 'not-this-one' }));
    assert.deepEqual(stale, { outcome: 'not_connected', latencyMs: 0, reason: 'connection_replaced' });
    const exact = await server.deliverLocal(
      request({ deviceId: 'dev-ok', connectionId: record.connectionId }),
    );
    assert.equal(exact.outcome, 'delivered');

    // Every request ended in exactly one outcome.
    assert.equal(await metricValue(metrics, 'pushline_server_deliveries_total'), 6);
    assert.equal(await metricValue(metrics, 'pushline_server_deliveries_total', { outcome: 'delivered' }), 2);
    assert.equal(
      await metricValue(metrics, 'pushline_server_deliveries_total', { outcome: 'not_connected' }),
      2,
    );
  });

  it('the channel returns each outcome, and refuses bad tokens and calls outside the contract', async () => {
    const { server } = await world.startServer();
    answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-ok' })), () => ({
      ok: true,
    }));
    answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-no' })), () => ({
      ok: false,
    }));
    answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-mute' })), undefined);
    answering(await world.connect(server.deviceUrl, await world.token({ sub: 'dev-odd' })), () => 'yes');

    const outcome = (req: DeliverRequest) => channelDeliver(server.internalUrl, req);
    assert.equal((await outcome(request({ deviceId: 'dev-ok' }))).outcome, 'delivered');
    assert.equal((await outcome(request({ deviceId: 'dev-no' }))).outcome, 'rejected');
    assert.equal((await outcome(request({ deviceId: 'dev-mute', timeoutMs: 200 }))).outcome, 'timeout');
    assert.equal((await outcome(request({ deviceId: 'nobody' }))).outcome, 'not_connected');
    const odd = await outcome(request({ deviceId: 'dev-odd' }));
    assert.equal(odd.outcome, 'rejected');
    assert.equal(odd.reason, 'invalid_ack');

    await assert.rejects(
      channelDeliver(server.internalUrl, request(), 'wrong-token-wrong-token'),
      InternalAuthError,
    );
    const invalid = await rawFrame(
      server.internalUrl,
      JSON.stringify({ calls: [{ id: 1, op: 'deliver', req: { deviceId: 'dev-ok' } }] }),
      1,
    );
    assert.equal(invalid.get(1)?.error?.code, 'invalid_request');
  });

  it('refuses channel deliveries whose payload nests deeper than PUSHLINE_MAX_JSON_DEPTH, the others of the frame delivered', async () => {
    const { server } = await world.startServer({ env: { PUSHLINE_MAX_JSON_DEPTH: '8' } });
    const seen = answering(
      await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' })),
      () => ({
        ok: true,
      }),
    );
    const deep = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
    const call = (id: number, messageId: string, depth: number) =>
      `{"id":${id},"op":"deliver","req":{"messageId":"${messageId}","deviceId":"dev-1","source":"direct","timeoutMs":2000,"payload":${deep(depth)}}}`;

    const ok = await rawFrame(server.internalUrl, `{"calls":[${call(1, 'at-limit', 8)}]}`, 1);
    assert.equal(ok.get(1)?.deliver?.outcome, 'delivered');
    for (const depth of [12, 20_000]) {
      const results = await rawFrame(
        server.internalUrl,
        `{"calls":[${call(1, `deep-${depth}`, depth)},${call(2, `fine-${depth}`, 2)}]}`,
        2,
      );
      assert.equal(results.get(1)?.error?.code, 'invalid_request', `depth ${depth}`);
      assert.equal(
        results.get(2)?.deliver?.outcome,
        'delivered',
        `the other call of the frame, depth ${depth}`,
      );
    }
    assert.deepEqual(
      seen.map((m) => m.id),
      ['at-limit', 'fine-12', 'fine-20000'],
    );
  });

  it('does not re-emit a message id the device already acked on this connection', async () => {
    const { server } = await world.startServer();
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const seen = answering(device, () => ({ ok: true }));
    const req = request({ messageId: 'same-id' });

    const [a, b] = await Promise.all([server.deliverLocal(req), server.deliverLocal(req)]);
    assert.equal(a.outcome, 'delivered');
    assert.equal(b.outcome, 'delivered');
    assert.equal(b.duplicate, true);
    const c = await server.deliverLocal(req);
    assert.deepEqual(c, { outcome: 'delivered', latencyMs: 0, duplicate: true });
    assert.equal(seen.length, 1);

    // Another id is sent normally.
    assert.equal((await server.deliverLocal(request({ messageId: 'other-id' }))).outcome, 'delivered');
    assert.equal(seen.length, 2);
  });

  it('a message emitted before the drain closed the connection is timeout (may have been delivered), not not_connected', async () => {
    const { server } = await world.startServer();
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    // The device has the message but its ack never reaches the server before the drain ends.
    const seen = answering(device, undefined);
    const pending = server.deliverLocal(request({ messageId: 'emitted', timeoutMs: 30_000 }));
    await waitUntil(() => seen.length === 1, { what: 'the device to receive the message' });

    const closed = server.close();
    const result = await pending;
    await closed;
    assert.deepEqual(
      seen.map((m) => m.id),
      ['emitted'],
    );
    assert.equal(result.outcome, 'timeout', 'the device received it, so it is not known undelivered');
    assert.equal(result.reason, 'disconnected');

    // A message that never left (the connection was already gone) is still known not delivered.
    const after = await server.deliverLocal(request({ messageId: 'never-sent' }));
    assert.equal(after.outcome, 'not_connected');
    assert.deepEqual(
      seen.map((m) => m.id),
      ['emitted'],
    );
  });

  it('remembers backend ids per origin: another API key reusing an id is sent, not a duplicate', async () => {
    const { server } = await world.startServer();
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const seen = answering(device, () => ({ ok: true }));
    const outcome = async (req: DeliverRequest) => {
      const result = await server.deliverLocal(req);
      return [result.outcome, result.duplicate ?? false];
    };
    const shared = (origin: string | undefined, payload: string) =>
      request({ messageId: 'shared', payload, ...(origin === undefined ? {} : { origin }) });
    assert.deepEqual(await outcome(shared('key-a', 'a')), ['delivered', false]);
    assert.deepEqual(await outcome(shared('key-b', 'b')), ['delivered', false], 'another key: sent');
    assert.deepEqual(await outcome(shared(undefined, 'none')), ['delivered', false], 'no origin: its own');
    // Each sender's own retry is the duplicate, and is not sent again.
    assert.deepEqual(await outcome(shared('key-a', 'a again')), ['delivered', true]);
    assert.deepEqual(await outcome(shared('key-b', 'b again')), ['delivered', true]);
    assert.deepEqual(await outcome(shared(undefined, 'none again')), ['delivered', true]);
    assert.deepEqual(
      seen.map((m) => m.payload),
      ['a', 'b', 'none'],
    );
  });

  it('delivers stored messages from the offline inbox before live ones', async () => {
    const stored = (id: string): StoredMessage => ({
      v: 1,
      requestId: id,
      target: { type: 'device', id: 'dev-1' },
      payload: { stored: id },
      createdAt: Date.now(),
      expiresAt: Date.now() + 60_000,
      attempts: 1,
    });
    const outcomes: string[] = [];
    const inbox: OfflineInbox = {
      async drain(deviceId, deliver) {
        assert.equal(deviceId, 'dev-1');
        for (const msg of [stored('s1'), stored('s2')]) outcomes.push((await deliver(msg)).outcome);
      },
    };
    const { server, metrics } = await world.startServer({ deps: { inbox } });
    const order: string[] = [];
    // The handler is in place before the connection, since the drain starts right after it.
    await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }), {}, (device) =>
      device.on('message', (msg: DeviceMessage, ack: Ack) => {
        order.push(msg.id);
        // Slow acks for stored messages, so a live message would overtake them without the gate.
        setTimeout(() => ack({ ok: true }), msg.id.startsWith('s') ? 100 : 0);
      }),
    );
    const live = await server.deliverLocal(request({ messageId: 'live' }));
    assert.equal(live.outcome, 'delivered');
    assert.deepEqual(order, ['s1', 's2', 'live']);
    assert.deepEqual(outcomes, ['delivered', 'delivered']);
    assert.equal(
      await metricValue(metrics, 'pushline_server_deliveries_total', {
        source: 'offline',
        outcome: 'delivered',
      }),
      2,
    );
  });

  it('continues the caller’s trace: deliver span with the outcome, and a device ack child span in the message', async () => {
    const { server } = await world.startServer();
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const seen = answering(device, () => ({ ok: true }));
    const tracer = trace.getTracer('test-caller');
    const root = tracer.startSpan('caller', { kind: SpanKind.CLIENT });
    const carrier = injectTraceHeaders(trace.setSpan(context.active(), root));
    root.end();
    assert.ok(carrier.traceparent);

    const res = await channelDeliver(server.internalUrl, request({ trace: carrier }));
    assert.equal(res.outcome, 'delivered');

    const traceId = root.spanContext().traceId;
    const spans = await waitUntil(
      () => {
        const all = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
        return all.some((s) => s.name === 'device ack') && all.some((s) => s.name === 'deliver')
          ? all
          : undefined;
      },
      { what: 'deliver and device ack spans' },
    );
    const deliver = spans.find((s) => s.name === 'deliver');
    const ack = spans.find((s) => s.name === 'device ack');
    assert.ok(deliver && ack);
    assert.equal(deliver.kind, SpanKind.SERVER);
    assert.equal(deliver.attributes['pushline.outcome'], 'delivered');
    assert.equal(deliver.parentSpanContext?.spanId, root.spanContext().spanId);
    assert.equal(ack.parentSpanContext?.spanId, deliver.spanContext().spanId);
    // The device got the ack span's context, so a client can continue the trace.
    assert.equal(seen[0]?.traceparent?.split('-')[2], ack.spanContext().spanId);
  });
});
