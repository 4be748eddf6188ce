import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import type { DeliverRequest } from '@pushline/protocol';
import {
  createSpanRecorder,
  silentLogger,
  startTracing,
  trace,
  withSpan,
  type TracingHandle,
} from '@pushline/telemetry';
import {
  CoalescingDeliveryTransport,
  DeliveryTransportError,
  HttpDeliveryTransport,
} from '@pushline/delivery';
import { gate, isSettled, reply, startStubServer, streamBatch, type StubServer } from './internal-server.ts';

const TOKEN = 'internal-token-for-tests-0123456789';
const BATCH = '/internal/v1/deliver-batch';
const delivered = { outcome: 'delivered', latencyMs: 1 } as const;

function item(deviceId: string): DeliverRequest {
  return { messageId: `m-${deviceId}`, deviceId, payload: 1, source: 'direct', timeoutMs: 2000 };
}

describe('CoalescingDeliveryTransport', () => {
  let tracing: TracingHandle;
  let server: StubServer;
  let coalescing: CoalescingDeliveryTransport;

  before(() => {
    tracing = startTracing({
      serviceName: 'delivery-test',
      instanceId: 't',
      spanProcessors: [createSpanRecorder().spanProcessor],
    });
  });
  after(() => tracing.close());

  beforeEach(async () => {
    server = await startStubServer({ token: TOKEN, serverId: 'srv-a' });
    coalescing = new CoalescingDeliveryTransport({
      transport: new HttpDeliveryTransport({ internalToken: TOKEN, logger: silentLogger() }),
    });
  });
  afterEach(async () => {
    await coalescing.close();
    await server.close();
  });

  it('sends the calls of one turn as one batch and settles each caller with its own line', async () => {
    const slowAck = gate();
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      const stream = streamBatch(res);
      stream.line(1, delivered);
      void slowAck.opened.then(() => stream.end(`${JSON.stringify({ index: 0, result: delivered })}\n`));
      return true;
    };
    const slow = coalescing.deliver(server.url, item('slow'));
    const fast = coalescing.deliver(server.url, item('fast'));
    assert.deepEqual(await fast, delivered);
    assert.equal(await isSettled(slow), false, 'the fast caller does not wait for the slow device');
    slowAck.open();
    assert.deepEqual(await slow, delivered);
    assert.deepEqual(
      server.requests.map((r) => [r.path, (r.body as { items: unknown[] }).items.length]),
      [[BATCH, 2]],
    );
  });

  it('gives each item the trace context of its own caller, and the batch request none', async () => {
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      reply(res, 200, { results: [delivered, delivered] });
      return true;
    };
    const tracer = trace.getTracer('delivery-test');
    const traced = (name: string) =>
      withSpan(tracer, name, {}, async (span) => {
        await coalescing.deliver(server.url, item(name));
        return span.spanContext();
      });
    const [one, two] = await Promise.all([traced('one'), traced('two')]);
    const [sent] = server.requests;
    assert.equal(sent?.headers.traceparent, undefined);
    const items = (sent?.body as { items: { trace?: { traceparent?: string } }[] }).items;
    assert.deepEqual(
      items.map((i) => i.trace?.traceparent?.split('-').slice(1, 3)),
      [
        [one.traceId, one.spanId],
        [two.traceId, two.spanId],
      ],
    );
  });

  it('sends a call alone in its turn as a single delivery', async () => {
    server.connections.set('solo', 'c-1');
    assert.equal((await coalescing.deliver(server.url, item('solo'))).outcome, 'delivered');
    assert.deepEqual(
      server.requests.map((r) => r.path),
      ['/internal/v1/deliver'],
    );
  });

  it('rejects every caller of a failed batch with the typed error', async () => {
    server.onRequest = (_req, res) => {
      reply(res, 503, { error: 'draining' });
      return true;
    };
    const calls = [coalescing.deliver(server.url, item('a')), coalescing.deliver(server.url, item('b'))];
    for (const call of calls) {
      await assert.rejects(call, (err: unknown) => {
        assert.ok(err instanceof DeliveryTransportError);
        assert.equal(err.status, 503);
        return true;
      });
    }
  });
});
