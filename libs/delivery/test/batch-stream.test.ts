import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { DeliverRequest } from '@pushline/protocol';
import { createMetricsRegistry, silentLogger, type Registry } from '@pushline/telemetry';
import { DeliveryTransportError, HttpDeliveryTransport } from '@pushline/delivery';
import { waitUntil, within } from '@pushline/testkit';
import { gate, isSettled, reply, startStubServer, streamBatch, type StubServer } from './internal-server.ts';

const TOKEN = 'internal-token-for-tests-0123456789';
const BATCH = '/internal/v1/deliver-batch';

function item(deviceId: string, overrides: Partial<DeliverRequest> = {}): DeliverRequest {
  return {
    messageId: `m-${deviceId}`,
    deviceId,
    payload: { to: deviceId },
    source: 'direct',
    timeoutMs: 2000,
    ...overrides,
  };
}

const delivered = { outcome: 'delivered', latencyMs: 1 } as const;

describe('HttpDeliveryTransport.deliverEach with a streamed answer', () => {
  let server: StubServer;
  let metrics: Registry;
  let transport: HttpDeliveryTransport;

  beforeEach(async () => {
    server = await startStubServer({ token: TOKEN, serverId: 'srv-a' });
    metrics = createMetricsRegistry({}, false);
    transport = new HttpDeliveryTransport({ internalToken: TOKEN, logger: silentLogger(), metrics });
  });
  afterEach(async () => {
    await transport.close();
    await server.close();
  });

  async function batchRequests(result: string): Promise<number> {
    const metric = await metrics.getSingleMetric('pushline_transport_requests_total')?.get();
    return (
      metric?.values.find((v) => v.labels['route'] === 'deliver_batch' && v.labels['result'] === result)
        ?.value ?? 0
    );
  }

  it('asks for the stream and settles each item on its own line, in completion order', async () => {
    const slowAck = gate();
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      const stream = streamBatch(res);
      stream.line(1, delivered);
      void slowAck.opened.then(() => stream.end(`${JSON.stringify({ index: 0, result: delivered })}\n`));
      return true;
    };
    const [slow, fast] = transport.deliverEach(server.url, [item('slow'), item('fast')]);
    assert.ok(slow && fast);
    assert.deepEqual(await fast, delivered);
    assert.equal(await isSettled(slow), false, 'the slow item waits for its own line only');
    slowAck.open();
    assert.deepEqual(await slow, delivered);

    const [sent] = server.requests;
    assert.equal(sent?.path, BATCH);
    assert.match(String(sent?.headers.accept), /^application\/x-ndjson\b/);
    // The exchange is counted when its response ends, which may be a tick after its last item settled.
    await waitUntil(async () => (await batchRequests('ok')) === 1, {
      timeoutMs: 5_000,
      what: 'batch counted ok',
    });
    assert.equal(await batchRequests('ok'), 1);
  });

  // The items still open were being delivered when the server went: they may have arrived.
  it('settles the items still open as timeout / server_lost when the connection is cut mid-stream', async () => {
    const firstLineRead = gate();
    server.onRequest = (req, res, socket) => {
      if (req.path !== BATCH) return false;
      streamBatch(res).line(2, { outcome: 'rejected', reason: 'busy', latencyMs: 1 });
      void firstLineRead.opened.then(() => socket.destroy());
      return true;
    };
    const [a, b, c] = transport.deliverEach(server.url, [item('a'), item('b'), item('c')]);
    assert.ok(a && b && c);
    assert.equal((await c).outcome, 'rejected');
    firstLineRead.open();
    for (const open of [a, b]) {
      const result = await open;
      assert.deepEqual([result.outcome, result.reason], ['timeout', 'server_lost']);
    }
    assert.equal(await batchRequests('lost'), 1);
  });

  it('rejects the open items with invalid_response on a malformed line instead of waiting', async () => {
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      const stream = streamBatch(res);
      stream.line(0, delivered);
      stream.raw('{"index": 1, "result": {"outcome": "deliv');
      stream.raw('ered"\n'); // the line ends without closing its object
      return true; // and the server keeps the response open
    };
    const [ok, broken] = transport.deliverEach(server.url, [item('a'), item('b')]);
    assert.deepEqual(await ok, delivered);
    await assert.rejects(broken as Promise<unknown>, (err: unknown) => {
      assert.ok(err instanceof DeliveryTransportError);
      assert.equal(err.failure, 'invalid_response');
      assert.match(err.message, /not JSON/);
      return true;
    });
  });

  it('rejects with invalid_response on a line outside the contract, for an unknown item, or twice', async () => {
    const lines = [
      `${JSON.stringify({ index: 0, result: { outcome: 'teleported', latencyMs: 1 } })}\n`,
      `${JSON.stringify({ index: 7, result: delivered })}\n`,
      `${JSON.stringify({ index: 0, result: delivered })}\n${JSON.stringify({ index: 0, result: delivered })}\n`,
    ];
    for (const text of lines) {
      server.onRequest = (req, res) => {
        if (req.path !== BATCH) return false;
        streamBatch(res).raw(text);
        return true;
      };
      const settled = await Promise.allSettled(transport.deliverEach(server.url, [item('a'), item('b')]));
      // Item 0 may have its result before the bad line; item 1 never does.
      const last = settled[1];
      assert.equal(last?.status, 'rejected', text);
      assert.equal((last.reason as DeliveryTransportError).failure, 'invalid_response');
    }
  });

  it('rejects the items a stream ended without', async () => {
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      streamBatch(res).end(`${JSON.stringify({ index: 1, result: delivered })}\n`);
      return true;
    };
    const [missing, answered] = transport.deliverEach(server.url, [item('a'), item('b')]);
    assert.deepEqual(await answered, delivered);
    await assert.rejects(missing as Promise<unknown>, (err: unknown) => {
      assert.ok(err instanceof DeliveryTransportError);
      assert.equal(err.failure, 'invalid_response');
      assert.match(err.message, /without 1 of 2 results/);
      return true;
    });
  });

  it('reads CRLF line ends, a charset parameter and a character split over two writes', async () => {
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      const text = [
        JSON.stringify({
          index: 1,
          result: { outcome: 'rejected', reason: 'stummgeschaltet ✋', latencyMs: 2 },
        }),
        JSON.stringify({ index: 0, result: delivered }),
        '',
      ].join('\r\n');
      const bytes = Buffer.from(text);
      const cut = bytes.indexOf(Buffer.from('✋')) + 1;
      res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8' });
      res.write(bytes.subarray(0, cut));
      res.end(bytes.subarray(cut));
      return true;
    };
    const [a, b] = await Promise.all(transport.deliverEach(server.url, [item('a'), item('b')]));
    assert.deepEqual(a, delivered);
    assert.deepEqual(b, { outcome: 'rejected', reason: 'stummgeschaltet ✋', latencyMs: 2 });
  });

  it('times each item out on its own deadline while the others still get their lines', async () => {
    await transport.close();
    transport = new HttpDeliveryTransport({
      internalToken: TOKEN,
      logger: silentLogger(),
      timeoutMarginMs: 20,
    });
    const laterLine = gate();
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      const stream = streamBatch(res);
      void laterLine.opened.then(() => stream.end(`${JSON.stringify({ index: 1, result: delivered })}\n`));
      return true;
    };
    const [short, long] = transport.deliverEach(server.url, [
      item('short', { timeoutMs: 30 }),
      item('long', { timeoutMs: 5_000 }),
    ]);
    assert.ok(short && long);
    const timedOut = await short;
    assert.equal(timedOut.outcome, 'timeout');
    assert.equal(timedOut.reason, 'server_timeout');
    assert.ok(timedOut.latencyMs >= 50, `latency ${timedOut.latencyMs}`);
    assert.equal(await isSettled(long), false);
    laterLine.open();
    assert.deepEqual(await long, delivered);
  });

  it('still reads an older server that answers every result at once as JSON', async () => {
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      reply(res, 200, { results: [delivered, { outcome: 'timeout', latencyMs: 5 }] });
      return true;
    };
    const results = await Promise.all(transport.deliverEach(server.url, [item('a'), item('b')]));
    assert.deepEqual(
      results.map((r) => r.outcome),
      ['delivered', 'timeout'],
    );
    assert.equal(await batchRequests('ok'), 1);
  });

  it('settles every item as timeout / server_lost when an older server is cut off mid-answer', async () => {
    server.onRequest = (req, res, socket) => {
      if (req.path !== BATCH) return false;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 1000 });
      res.write('{"results":[{"outcome":"delivered",', () => socket.destroy());
      return true;
    };
    for (const result of await Promise.all(transport.deliverEach(server.url, [item('a'), item('b')]))) {
      assert.deepEqual([result.outcome, result.reason], ['timeout', 'server_lost']);
    }
  });

  it('settles held items with a typed error when the transport closes', async () => {
    server.onRequest = (req, res) => {
      if (req.path !== BATCH) return false;
      streamBatch(res).line(0, delivered);
      return true;
    };
    const [first, held] = transport.deliverEach(server.url, [item('a'), item('b')]);
    assert.deepEqual(await first, delivered);
    await transport.close();
    await assert.rejects(held as Promise<unknown>, DeliveryTransportError);
  });

  it('ends exchanges in flight when the transport closes, without waiting for deadlines or retrying', async () => {
    // A warm pooled socket first: a request cut on a reused socket is the case that retries.
    server.connections.set('warm', 'conn-warm');
    assert.equal((await transport.deliver(server.url, item('warm'))).outcome, 'delivered');
    let held = 0;
    server.onRequest = () => {
      held++;
      return true; // never answers, like a server that hung
    };
    const slow = { timeoutMs: 60_000 };
    const pending = [
      ...transport.deliverEach(server.url, [item('a', slow), item('b', slow)]),
      transport.deliver(server.url, item('c', slow)),
    ];
    await waitUntil(() => held === 2, { timeoutMs: 5_000, what: 'the batch and the single delivery held' });
    await transport.close();
    const results = await within(Promise.allSettled(pending), 5_000, 'in-flight calls to end on close');
    for (const r of results) {
      assert.ok(r.status === 'rejected' && r.reason instanceof DeliveryTransportError);
      assert.match(r.reason.message, /closed/);
    }
    assert.equal(server.requests.length, 3, 'nothing was sent again after close');
  });
});
