import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  createSpanRecorder,
  SpanKind,
  startTracing,
  type ReadableSpan,
  type TracingHandle,
} from '@pushline/telemetry';
import { waitUntil } from '@pushline/testkit';
import {
  describeTrace,
  pathToRoot,
  rootOf,
  spansOfTrace,
  startPlatform,
  type Platform,
} from '../support/platform.ts';

/**
 * One message, one trace: from the API request to the device's ack, across the internal
 * delivery hop (direct push) and across Kafka and the message processor (async publish), with
 * every parent link intact, and the device receiving a traceparent that continues it.
 */

const recorder = createSpanRecorder();
let tracing: TracingHandle;
let platform: Platform;

before(async () => {
  tracing = startTracing({
    serviceName: 'pushline-e2e',
    instanceId: 'test',
    spanProcessors: [recorder.spanProcessor],
  });
  platform = await startPlatform('traces');
});
after(async () => {
  await platform.close();
  await tracing.close();
});
afterEach(() => recorder.reset());

const scope = (s: ReadableSpan) => s.instrumentationScope.name;
const traceIdOf = (traceparent: string | undefined) => traceparent?.split('-')[1];
const parentIdOf = (traceparent: string | undefined) => traceparent?.split('-')[2];

/** Waits until a span matching `match` has ended and been exported. */
async function endedSpan(match: (s: ReadableSpan) => boolean, what: string): Promise<ReadableSpan> {
  return waitUntil(
    async () => {
      await recorder.flush();
      return recorder.spans().find(match);
    },
    { timeoutMs: 15_000, what },
  );
}

describe('a direct push', () => {
  it('is one trace from the API request through the connection server to the device ack', async () => {
    const [serverA, serverB] = platform.servers;
    assert.ok(serverA && serverB);
    const device = await platform.connect(serverB, 'dev-direct', 'user-direct');
    const received = device.nextMessage();
    const res = await platform.call('POST', '/v1/devices/dev-direct/messages', { payload: { n: 1 } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const message = await received;
    const id = (res.body as { id: string }).id;

    const ack = await endedSpan(
      (s) => s.name === 'device ack' && s.attributes['messaging.message.id'] === id,
      'device ack span',
    );
    const traceId = ack.spanContext().traceId;
    const serverSpan = await endedSpan(
      (s) =>
        s.spanContext().traceId === traceId && s.kind === SpanKind.SERVER && scope(s) === 'pushline-push-api',
      'push-api SERVER span',
    );
    const spans = spansOfTrace(recorder.spans(), traceId);
    const root = rootOf(spans);
    assert.equal(root, serverSpan, describeTrace(spans));
    assert.equal(root.name, 'POST /v1/devices/:deviceId/messages');
    assert.equal(root.attributes['http.response.status_code'], 200);

    // device ack ← deliver (connection-server, SERVER) ← deliver (router, CLIENT) ← ... ← POST
    const path = pathToRoot(spans, ack);
    const csDeliver = path[1];
    assert.equal(csDeliver?.name, 'deliver');
    assert.equal(csDeliver.kind, SpanKind.SERVER);
    assert.equal(scope(csDeliver), 'pushline-connection-server');
    assert.equal(csDeliver.attributes['pushline.outcome'], 'delivered');
    assert.equal(csDeliver.parentSpanContext?.isRemote, true, 'continued from the internal HTTP request');
    const routerDeliver = path[2];
    assert.equal(routerDeliver?.name, 'deliver');
    assert.equal(routerDeliver.kind, SpanKind.CLIENT);
    assert.equal(routerDeliver.attributes['pushline.outcome'], 'delivered');
    assert.equal(ack.kind, SpanKind.CLIENT);
    assert.equal(ack.attributes['pushline.outcome'], 'delivered');

    // Target resolution with its cache attribute sits in the same trace.
    const resolve = [...spans.values()].find((s) => s.name === 'resolve target');
    assert.equal(typeof resolve?.attributes['pushline.cache_hit'], 'boolean', describeTrace(spans));

    // The device can continue the trace: its message names the ack span as parent.
    assert.equal(traceIdOf(message.traceparent), traceId);
    assert.equal(parentIdOf(message.traceparent), ack.spanContext().spanId);

    const scopes = new Set([...spans.values()].map(scope));
    assert.ok(
      scopes.has('pushline-push-api') && scopes.has('pushline-connection-server'),
      [...scopes].join(),
    );
  });
});

describe('an async publish', () => {
  it('is one trace through Kafka, the processor and the connection server to the device ack', async () => {
    const [serverA] = platform.servers;
    assert.ok(serverA);
    const device = await platform.connect(serverA, 'dev-async', 'user-async');
    const received = device.nextMessage(20_000);
    const res = await platform.call('POST', '/v1/publish', {
      target: { type: 'device', id: 'dev-async' },
      payload: { n: 2 },
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const [id] = (res.body as { ids: string[] }).ids;
    const message = await received;
    assert.equal(message.id, id);

    const traceId = traceIdOf(message.traceparent);
    assert.ok(traceId, 'the device message carries a traceparent');
    // The consumer span ends last: after the outcome is on the delivery-events topic.
    const processSpan = await endedSpan(
      (s) => s.spanContext().traceId === traceId && s.name === `process ${platform.topics.pushRequests}`,
      'processor CONSUMER span',
    );
    const ack = await endedSpan(
      (s) => s.spanContext().traceId === traceId && s.name === 'device ack',
      'device ack span',
    );
    const spans = spansOfTrace(recorder.spans(), traceId);
    const root = rootOf(spans);
    assert.equal(root.name, 'POST /v1/publish', describeTrace(spans));
    assert.equal(root.kind, SpanKind.SERVER);

    // Kafka: the consumer span is a child of the producer span, across the broker.
    const send = spans.get(processSpan.parentSpanContext?.spanId ?? '');
    assert.ok(send, describeTrace(spans));
    assert.equal(send.name, `send ${platform.topics.pushRequests}`);
    assert.equal(send.kind, SpanKind.PRODUCER);
    assert.equal(scope(send), 'pushline-push-api');
    assert.equal(processSpan.kind, SpanKind.CONSUMER);
    assert.equal(processSpan.parentSpanContext?.isRemote, true);
    assert.equal(scope(processSpan), 'pushline-message-processor');
    assert.equal(processSpan.attributes['messaging.system'], 'kafka');
    assert.equal(processSpan.attributes['messaging.message.id'], id);

    // device ack → deliver (connection-server) → deliver (router in the processor) → … → process → send → POST
    const path = pathToRoot(spans, ack);
    const names = path.map((s) => `${s.name} [${scope(s)}]`);
    const at = (name: string, scopeName: string) => names.indexOf(`${name} [${scopeName}]`);
    assert.ok(at('deliver', 'pushline-connection-server') === 1, names.join(' ← '));
    assert.ok(at('deliver', 'pushline-message-processor') > 1, names.join(' ← '));
    assert.ok(
      at(processSpan.name, 'pushline-message-processor') > at('deliver', 'pushline-message-processor'),
    );
    assert.ok(at(send.name, 'pushline-push-api') === at(processSpan.name, 'pushline-message-processor') + 1);
    assert.equal(path.at(-1), root);
    assert.equal(parentIdOf(message.traceparent), ack.spanContext().spanId);

    // The outcome written to delivery-events is part of the same trace.
    const outcome = [...spans.values()].find((s) => s.name === `send ${platform.topics.deliveryEvents}`);
    assert.ok(outcome, describeTrace(spans));
    assert.equal(outcome.kind, SpanKind.PRODUCER);
    assert.equal(outcome.parentSpanContext?.spanId, processSpan.spanContext().spanId);
  });
});
