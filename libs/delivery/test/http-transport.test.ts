import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import {
  createMetricsRegistry,
  createSpanRecorder,
  silentLogger,
  startTracing,
  trace,
  withSpan,
  type Registry,
  type TracingHandle,
} from '@pushline/telemetry';
import type { DeliverRequest } from '@pushline/protocol';
import { DeliveryTransportError, HttpDeliveryTransport, InternalAuthError } from '@pushline/delivery';
import { closedPortUrl, reply, startStubServer, type StubServer } from './internal-server.ts';

/** Every item's result, in request order; rejects with the first error. */
const deliverAll = (transport: HttpDeliveryTransport, serverUrl: string, reqs: readonly DeliverRequest[]) =>
  Promise.all(transport.deliverEach(serverUrl, reqs));

const TOKEN = 'internal-token-for-tests-0123456789';

function deliverRequest(overrides: Partial<Parameters<HttpDeliveryTransport['deliver']>[1]> = {}) {
  return {
    messageId: 'm-1',
    deviceId: 'dev-1',
    connectionId: 'conn-1',
    payload: { hello: 'world' },
    source: 'direct' as const,
    timeoutMs: 2000,
    ...overrides,
  };
}

describe('HttpDeliveryTransport', () => {
  let tracing: TracingHandle;
  let server: StubServer;
  let metrics: Registry;
  let transport: HttpDeliveryTransport;

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
    server.connections.set('dev-1', 'conn-1');
    metrics = createMetricsRegistry({}, false);
    transport = new HttpDeliveryTransport({ internalToken: TOKEN, logger: silentLogger(), metrics });
  });
  afterEach(async () => {
    await transport.close();
    await server.close();
  });

  async function requestCount(route: string, result: string): Promise<number> {
    const metric = await metrics.getSingleMetric('pushline_transport_requests_total')?.get();
    return (
      metric?.values.find((v) => v.labels['route'] === route && v.labels['result'] === result)?.value ?? 0
    );
  }

  it('posts the request with the bearer token and parses the result', async () => {
    const result = await transport.deliver(server.url, deliverRequest());
    assert.deepEqual(result, { outcome: 'delivered', latencyMs: 1 });
    const [sent] = server.requests;
    assert.equal(sent?.path, '/internal/v1/deliver');
    assert.equal(sent?.headers.authorization, `Bearer ${TOKEN}`);
    assert.equal(sent?.headers['content-type'], 'application/json');
    assert.deepEqual(sent?.body, deliverRequest());
    assert.equal(await requestCount('deliver', 'ok'), 1);
  });

  it('reports the device outcome the server gives (not connected here)', async () => {
    const result = await transport.deliver(server.url, deliverRequest({ connectionId: 'old-conn' }));
    assert.equal(result.outcome, 'not_connected');
    assert.equal(result.reason, 'not_connected_here');
  });

  it('reuses one keep-alive socket for sequential requests', async () => {
    for (let i = 0; i < 5; i++) await transport.deliver(server.url, deliverRequest({ messageId: `m-${i}` }));
    assert.equal(server.requests.length, 5);
    assert.equal(server.sockets, 1);
  });

  it('carries the active trace context in the body and the traceparent header', async () => {
    const tracer = trace.getTracer('delivery-test');
    const traceId = await withSpan(tracer, 'caller', {}, async (span) => {
      await transport.deliver(server.url, deliverRequest());
      return span.spanContext().traceId;
    });
    const [sent] = server.requests;
    const traceparent = sent?.headers.traceparent;
    assert.ok(typeof traceparent === 'string' && traceparent.includes(traceId), `traceparent ${traceparent}`);
    assert.deepEqual((sent?.body as { trace?: unknown }).trace, { traceparent });
  });

  it('keeps a trace context the caller set', async () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    await withSpan(trace.getTracer('delivery-test'), 'caller', {}, () =>
      transport.deliver(server.url, deliverRequest({ trace: { traceparent } })),
    );
    assert.equal(server.requests[0]?.headers.traceparent, traceparent);
    assert.deepEqual((server.requests[0]?.body as { trace?: unknown }).trace, { traceparent });
  });

  it('maps a refused connection to not_connected / server_unreachable', async () => {
    const result = await transport.deliver(await closedPortUrl(), deliverRequest());
    assert.equal(result.outcome, 'not_connected');
    assert.equal(result.reason, 'server_unreachable');
    assert.ok(result.latencyMs >= 0);
    assert.equal(await requestCount('deliver', 'unreachable'), 1);
  });

  // A reset after the request was written may follow the server acting on it (delivering to the
  // device, then dying): only a connection that never opened is known not delivered.
  it('maps a connection reset after the request was sent to timeout / server_lost', async () => {
    server.onRequest = (_req, _res, socket) => {
      socket.destroy();
      return true;
    };
    const result = await transport.deliver(server.url, deliverRequest());
    assert.deepEqual(
      { outcome: result.outcome, reason: result.reason },
      { outcome: 'timeout', reason: 'server_lost' },
    );
    assert.equal(await requestCount('deliver', 'lost'), 1);
    assert.equal(await requestCount('deliver', 'unreachable'), 0);
  });

  it('reports a server that dies after reading a request on a pooled socket as server_lost, not not_connected', async () => {
    await transport.deliver(server.url, deliverRequest());
    server.onRequest = () => {
      // The server took the request and died: its port refuses the retry on a fresh socket.
      void server.close();
      return true;
    };
    const result = await transport.deliver(server.url, deliverRequest({ messageId: 'm-2' }));
    assert.deepEqual(
      { outcome: result.outcome, reason: result.reason },
      { outcome: 'timeout', reason: 'server_lost' },
    );
    assert.equal(server.requests.length, 2);
  });

  it('throws a server_lost DeliveryTransportError when a broadcast server dies mid-request', async () => {
    server.onRequest = (_req, _res, socket) => {
      socket.destroy();
      return true;
    };
    await assert.rejects(
      transport.broadcast(server.url, { messageId: 'b-1', topic: 'news', payload: 1, timeoutMs: 1000 }),
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'server_lost',
    );
  });

  it('deliverEach reports every item timeout / server_lost when the server dies after taking the batch', async () => {
    await transport.deliver(server.url, deliverRequest());
    server.onRequest = (req) => {
      if (req.path !== '/internal/v1/deliver-batch') return false;
      void server.close();
      return true;
    };
    const results = await deliverAll(transport, server.url, [
      deliverRequest({ messageId: 'm-a' }),
      deliverRequest({ messageId: 'm-b' }),
    ]);
    assert.deepEqual(
      results.map((r) => [r.outcome, r.reason]),
      [
        ['timeout', 'server_lost'],
        ['timeout', 'server_lost'],
      ],
    );
    assert.equal(await requestCount('deliver_batch', 'lost'), 1);
  });

  it('retries once on a fresh socket when a pooled keep-alive socket was dropped', async () => {
    await transport.deliver(server.url, deliverRequest());
    let dropped = false;
    server.onRequest = (_req, _res, socket) => {
      if (dropped) return false;
      dropped = true;
      socket.destroy();
      return true;
    };
    const result = await transport.deliver(server.url, deliverRequest({ messageId: 'm-2' }));
    assert.equal(result.outcome, 'delivered');
    assert.equal(server.requests.length, 3);
    assert.equal(server.sockets, 2);
  });

  it('gives up after timeoutMs plus the margin with timeout / server_timeout', async () => {
    await transport.close();
    transport = new HttpDeliveryTransport({
      internalToken: TOKEN,
      logger: silentLogger(),
      timeoutMarginMs: 50,
    });
    server.onRequest = () => true; // never answers
    const result = await transport.deliver(server.url, deliverRequest({ timeoutMs: 50 }));
    assert.equal(result.outcome, 'timeout');
    assert.equal(result.reason, 'server_timeout');
    assert.equal(server.requests.length, 1, 'the request reached the server, which never answered');
  });

  it('throws InternalAuthError on 401', async () => {
    const wrong = new HttpDeliveryTransport({ internalToken: 'wrong', logger: silentLogger() });
    try {
      await assert.rejects(wrong.deliver(server.url, deliverRequest()), (err: unknown) => {
        assert.ok(err instanceof InternalAuthError);
        assert.ok(err instanceof DeliveryTransportError);
        assert.equal(err.status, 401);
        return true;
      });
    } finally {
      await wrong.close();
    }
  });

  it('throws DeliveryTransportError with the status on another non-2xx answer', async () => {
    server.onRequest = (_req, res) => {
      reply(res, 503, { error: 'draining' });
      return true;
    };
    await assert.rejects(transport.deliver(server.url, deliverRequest()), (err: unknown) => {
      assert.ok(err instanceof DeliveryTransportError && !(err instanceof InternalAuthError));
      assert.equal(err.failure, 'http_status');
      assert.equal(err.status, 503);
      return true;
    });
  });

  it('throws DeliveryTransportError on a body outside the contract', async () => {
    server.onRequest = (_req, res) => {
      reply(res, 200, { outcome: 'teleported', latencyMs: 1 });
      return true;
    };
    await assert.rejects(transport.deliver(server.url, deliverRequest()), (err: unknown) => {
      assert.ok(err instanceof DeliveryTransportError);
      assert.equal(err.failure, 'invalid_response');
      assert.equal(err.status, 200);
      return true;
    });
    server.onRequest = (_req, res) => {
      res.end('not json');
      return true;
    };
    await assert.rejects(transport.deliver(server.url, deliverRequest()), { failure: 'invalid_response' });
  });

  it('broadcasts and parses the count', async () => {
    server.broadcastDelivered = 7;
    const result = await transport.broadcast(server.url, {
      messageId: 'b-1',
      topic: 'news',
      payload: 1,
      timeoutMs: 1000,
    });
    assert.deepEqual(result, { delivered: 7, latencyMs: 1 });
    assert.equal(server.requests[0]?.path, '/internal/v1/broadcast');
  });

  it('throws a server_unreachable DeliveryTransportError when a broadcast server is gone', async () => {
    await assert.rejects(
      transport.broadcast(await closedPortUrl(), {
        messageId: 'b-1',
        topic: 'news',
        payload: 1,
        timeoutMs: 1000,
      }),
      (err: unknown) => err instanceof DeliveryTransportError && err.failure === 'server_unreachable',
    );
  });

  it('close() is idempotent and later calls fail with a typed error', async () => {
    await transport.deliver(server.url, deliverRequest());
    await Promise.all([transport.close(), transport.close()]);
    await transport.close();
    await assert.rejects(transport.deliver(server.url, deliverRequest()), DeliveryTransportError);
  });

  it('deliverEach sends one batch and returns the results in request order', async () => {
    server.onRequest = (req, res) => {
      if (req.path !== '/internal/v1/deliver-batch') return false;
      const { items } = req.body as { items: { deviceId: string }[] };
      reply(res, 200, {
        results: items.map((item) =>
          item.deviceId === 'dev-1'
            ? { outcome: 'delivered', latencyMs: 1 }
            : { outcome: 'not_connected', reason: 'not_connected_here', latencyMs: 0 },
        ),
      });
      return true;
    };
    const results = await deliverAll(transport, server.url, [
      deliverRequest({ deviceId: 'dev-2', messageId: 'm-a' }),
      deliverRequest({ deviceId: 'dev-1', messageId: 'm-b' }),
    ]);
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['not_connected', 'delivered'],
    );
    assert.deepEqual(
      server.requests.map((r) => r.path),
      ['/internal/v1/deliver-batch'],
    );
    assert.equal(await requestCount('deliver_batch', 'ok'), 1);
  });

  it('deliverEach falls back to one deliver per item on a server without the batch endpoint', async () => {
    const results = await deliverAll(transport, server.url, [
      deliverRequest({ messageId: 'm-a' }),
      deliverRequest({ deviceId: 'dev-2', messageId: 'm-b', connectionId: undefined }),
    ]);
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['delivered', 'not_connected'],
    );
    assert.deepEqual(
      server.requests.map((r) => r.path),
      ['/internal/v1/deliver-batch', '/internal/v1/deliver', '/internal/v1/deliver'],
    );
  });

  it('deliverEach reports every item server_unreachable when the server is gone', async () => {
    const gone = await closedPortUrl();
    const results = await deliverAll(transport, gone, [
      deliverRequest({ messageId: 'm-a' }),
      deliverRequest({ messageId: 'm-b' }),
    ]);
    assert.deepEqual(
      results.map((r) => [r.outcome, r.reason]),
      [
        ['not_connected', 'server_unreachable'],
        ['not_connected', 'server_unreachable'],
      ],
    );
  });

  it('deliverEach throws invalid_response when the server answers another number of results', async () => {
    server.onRequest = (_req, res) => {
      reply(res, 200, { results: [{ outcome: 'delivered', latencyMs: 1 }] });
      return true;
    };
    await assert.rejects(
      deliverAll(transport, server.url, [
        deliverRequest({ messageId: 'm-a' }),
        deliverRequest({ messageId: 'm-b' }),
      ]),
      (err: unknown) => {
        assert.ok(err instanceof DeliveryTransportError);
        assert.equal(err.failure, 'invalid_response');
        return true;
      },
    );
  });
});
