import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PushRequest } from '@pushline/protocol';
import { SpanKind, createSpanRecorder, startTracing, type TracingHandle } from '@pushline/telemetry';
import { collectRecords, recordJson } from '@pushline/testkit';
import {
  IdempotencyStore,
  PROBLEM_TYPE_BASE,
  REPLAYED_HEADER,
  apiKeyId,
  idempotentMessageId,
} from '../src/index.ts';
import { call, startApi, type ApiHarness } from './harness.ts';

const recorder = createSpanRecorder();
let tracing: TracingHandle;
let h: ApiHarness;

before(async () => {
  tracing = startTracing({
    serviceName: 'push-api-test',
    instanceId: 'test',
    spanProcessors: [recorder.spanProcessor],
  });
  h = await startApi({ label: 'publish' });
});
after(async () => {
  await h.close();
  await tracing.close();
});

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const CALLER_SPAN = '00f067aa0ba902b7';

describe('POST /v1/publish', () => {
  it('produces one PushRequest keyed by target, with trace context, and answers 202 with the id', async () => {
    const res = await call(h.url, 'POST', '/v1/publish', {
      key: h.keys.publish,
      headers: { traceparent: `00-${TRACE_ID}-${CALLER_SPAN}-01` },
      body: {
        id: 'pub-single-1',
        target: { type: 'device', id: 'dev-1' },
        payload: { hello: 'world' },
        ttlSeconds: 60,
      },
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    assert.deepEqual(res.body, { ids: ['pub-single-1'] });

    const [record] = await collectRecords(h.kafka, h.topics.pushRequests, 1, {
      filter: (r) => r.key === 'device:dev-1',
    });
    assert.ok(record);
    const request = PushRequest.parse(recordJson(record));
    assert.equal(request.id, 'pub-single-1');
    assert.deepEqual(request.target, { type: 'device', id: 'dev-1' });
    assert.deepEqual(request.payload, { hello: 'world' });
    assert.equal(request.ttlSeconds, 60);
    assert.ok(Math.abs(request.createdAt - Date.now()) < 60_000);

    // The record carries the PRODUCER span's context, which continues the caller's trace.
    await recorder.flush();
    const spans = recorder.spans();
    const server = spans.find((s) => s.name === 'POST /v1/publish');
    const producer = spans.find((s) => s.name === `send ${h.topics.pushRequests}`);
    assert.ok(server && producer, spans.map((s) => s.name).join(', '));
    assert.equal(server.kind, SpanKind.SERVER);
    assert.equal(server.spanContext().traceId, TRACE_ID);
    assert.equal(server.parentSpanContext?.spanId, CALLER_SPAN);
    assert.equal(server.attributes['http.route'], '/v1/publish');
    assert.equal(server.attributes['http.request.method'], 'POST');
    assert.equal(server.attributes['http.response.status_code'], 202);
    assert.equal(server.attributes['url.path'], '/v1/publish');
    assert.equal(producer.kind, SpanKind.PRODUCER);
    assert.equal(producer.parentSpanContext?.spanId, server.spanContext().spanId);
    assert.equal(producer.attributes['messaging.system'], 'kafka');
    assert.equal(producer.attributes['messaging.destination.name'], h.topics.pushRequests);
    assert.equal(record.headers['traceparent'], `00-${TRACE_ID}-${producer.spanContext().spanId}-01`);
  });

  it('produces a batch in order, generating missing ids', async () => {
    const res = await call(h.url, 'POST', '/v1/publish', {
      key: h.keys.admin,
      body: {
        messages: [
          { id: 'batch-a', target: { type: 'user', id: 'batch-user' }, payload: 1 },
          { target: { type: 'user', id: 'batch-user' }, payload: 2 },
          { id: 'batch-c', target: { type: 'topic', id: 'news' }, payload: 3 },
        ],
      },
    });
    assert.equal(res.status, 202);
    const ids = (res.body as { ids: string[] }).ids;
    assert.equal(ids.length, 3);
    assert.equal(ids[0], 'batch-a');
    assert.equal(ids[2], 'batch-c');
    assert.ok(ids[1] && ids[1].length > 0);

    const records = await collectRecords(h.kafka, h.topics.pushRequests, 3, {
      filter: (r) => r.key === 'user:batch-user' || r.key === 'topic:news',
    });
    const byId = new Map(records.map((r) => [PushRequest.parse(recordJson(r)).id, r]));
    assert.deepEqual([...byId.keys()].sort(), [...ids].sort());
    assert.equal(byId.get('batch-c')?.key, 'topic:news');
    // Same key, same partition: order within the user's requests holds.
    const userOrder = records
      .filter((r) => r.key === 'user:batch-user')
      .map((r) => PushRequest.parse(recordJson(r)).id);
    assert.deepEqual(userOrder, [ids[0], ids[1]]);
  });

  it('rejects a batch above PUSHLINE_MAX_BATCH naming the field', async () => {
    const messages = Array.from({ length: 501 }, () => ({
      target: { type: 'device', id: 'x' },
      payload: 0,
    }));
    const res = await call(h.url, 'POST', '/v1/publish', { key: h.keys.publish, body: { messages } });
    assert.equal(res.status, 400);
    const problem = res.body as { type: string; errors: { field: string }[] };
    assert.equal(problem.type, `${PROBLEM_TYPE_BASE}validation-error`);
    assert.deepEqual(
      problem.errors.map((e) => e.field),
      ['messages'],
    );
  });
});

describe('Idempotency-Key', () => {
  const target = { type: 'device', id: 'idem-dev' } as const;

  it('replays the first response for the same key and body, producing nothing more', async () => {
    const body = { id: 'idem-1', target, payload: { n: 1 } };
    const headers = { 'idempotency-key': 'order-42' };
    const first = await call(h.url, 'POST', '/v1/publish', { key: h.keys.publish, headers, body });
    assert.equal(first.status, 202);
    assert.equal(first.headers.get(REPLAYED_HEADER), null);
    const again = await call(h.url, 'POST', '/v1/publish', { key: h.keys.publish, headers, body });
    assert.equal(again.status, 202);
    assert.deepEqual(again.body, first.body);
    assert.equal(again.headers.get(REPLAYED_HEADER), 'true');

    // A sentinel on the same key lands after anything produced before it in the same partition.
    const sentinel = await call(h.url, 'POST', '/v1/publish', {
      key: h.keys.publish,
      body: { id: 'idem-sentinel', target, payload: 0 },
    });
    assert.equal(sentinel.status, 202);
    const records = await collectRecords(h.kafka, h.topics.pushRequests, 2, {
      filter: (r) => r.key === 'device:idem-dev',
    });
    const ids = records.map((r) => PushRequest.parse(recordJson(r)).id);
    assert.deepEqual(ids, ['idem-1', 'idem-sentinel']);

    // Keys are per API key: another key with the same Idempotency-Key is a new request.
    const other = await call(h.url, 'POST', '/v1/publish', {
      key: h.keys.admin,
      headers,
      body: { ...body, id: 'idem-1-admin' },
    });
    assert.equal(other.status, 202);
    assert.deepEqual(other.body, { ids: ['idem-1-admin'] });
  });

  it('422 idempotency-key-reused for the same key with a different body', async () => {
    const headers = { 'idempotency-key': 'order-43' };
    assert.equal(
      (
        await call(h.url, 'POST', '/v1/publish', {
          key: h.keys.publish,
          headers,
          body: { target, payload: 1 },
        })
      ).status,
      202,
    );
    const res = await call(h.url, 'POST', '/v1/publish', {
      key: h.keys.publish,
      headers,
      body: { target, payload: 2 },
    });
    assert.equal(res.status, 422);
    assert.equal((res.body as { type: string }).type, `${PROBLEM_TYPE_BASE}idempotency-key-reused`);
  });

  it('409 idempotency-conflict while the first request with the key is in progress, then the replay', async () => {
    const body = { id: 'idem-inflight', target, payload: 'p' };
    const store = new IdempotencyStore({
      redis: h.redis,
      keyPrefix: h.keyPrefix,
      ttlSeconds: 60,
      pendingTtlMs: 60_000,
    });
    // Claim the key the way a request in flight holds it.
    const claim = await store.claim(apiKeyId(h.keys.publish), 'order-44', body);
    assert.equal(claim.kind, 'claimed');
    const headers = { 'idempotency-key': 'order-44' };
    const conflict = await call(h.url, 'POST', '/v1/publish', { key: h.keys.publish, headers, body });
    assert.equal(conflict.status, 409);
    assert.equal((conflict.body as { type: string }).type, `${PROBLEM_TYPE_BASE}idempotency-conflict`);
    assert.equal(conflict.headers.get('retry-after'), '1');

    if (claim.kind !== 'claimed') return;
    await claim.complete({ status: 202, body: { ids: ['idem-inflight'] } });
    const replay = await call(h.url, 'POST', '/v1/publish', { key: h.keys.publish, headers, body });
    assert.equal(replay.status, 202);
    assert.deepEqual(replay.body, { ids: ['idem-inflight'] });
    assert.equal(replay.headers.get(REPLAYED_HEADER), 'true');
  });

  it('derives missing ids from the API key, the Idempotency-Key and the index, so a retry repeats them', async () => {
    const body = {
      messages: [
        { target, payload: 1 },
        { id: 'given-id', target, payload: 2 },
        { target, payload: 3 },
      ],
    };
    const first = await call(h.url, 'POST', '/v1/publish', {
      key: h.keys.publish,
      headers: { 'idempotency-key': 'derive-1' },
      body,
    });
    assert.equal(first.status, 202, JSON.stringify(first.body));
    const ids = (first.body as { ids: string[] }).ids;
    const keyId = apiKeyId(h.keys.publish);
    assert.deepEqual(ids, [
      idempotentMessageId(keyId, 'derive-1', 0),
      'given-id',
      idempotentMessageId(keyId, 'derive-1', 2),
    ]);
    assert.match(ids[0] ?? '', /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // Another API key, another Idempotency-Key or another index: another id.
    const derived = new Set([
      idempotentMessageId(keyId, 'derive-1', 0),
      idempotentMessageId(apiKeyId(h.keys.admin), 'derive-1', 0),
      idempotentMessageId(keyId, 'derive-2', 0),
      idempotentMessageId(keyId, 'derive-1', 1),
    ]);
    assert.equal(derived.size, 4);
  });

  it('400 for an Idempotency-Key that is not printable ASCII', async () => {
    const res = await call(h.url, 'POST', '/v1/publish', {
      key: h.keys.publish,
      headers: { 'idempotency-key': 'has space' },
      body: { target, payload: 1 },
    });
    assert.equal(res.status, 400);
    assert.deepEqual(
      (res.body as { errors: { field: string; in: string }[] }).errors.map((e) => [e.in, e.field]),
      [['header', 'Idempotency-Key']],
    );
  });
});
