import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { DlqHeaders, type DeliveryEvent } from '@pushline/protocol';
import {
  createSpanRecorder,
  findSamples,
  parsePrometheusText,
  startTracing,
  type Registry,
  type SpanRecorder,
  type TracingHandle,
} from '@pushline/telemetry';
import { collectRecords, waitUntil } from '@pushline/testkit';
import { World, outputOf } from './harness.ts';

async function counter(
  metrics: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const families = parsePrometheusText(await metrics.metrics());
  return findSamples(families, name, labels).reduce((sum, s) => sum + s.value, 0);
}

const terminalIds = (events: readonly DeliveryEvent[]) =>
  new Set(events.filter((e) => e.terminal).map((e) => e.requestId));

describe('message processor', () => {
  let tracing: TracingHandle;
  let recorder: SpanRecorder;
  let world: World;

  before(() => {
    recorder = createSpanRecorder();
    tracing = startTracing({
      serviceName: 'pushline-message-processor-test',
      instanceId: 'test',
      spanProcessors: [recorder.spanProcessor],
    });
  });
  after(async () => {
    await tracing.close();
  });
  beforeEach(async () => {
    world = new World();
    await world.start();
  });
  afterEach(async () => {
    await world.close();
  });

  it('publish → the device receives it → one delivered outcome, in order per device, traced', async () => {
    const server = await world.startConnectionServer('a');
    const device = await world.connectDevice(server, 'dev-1');
    const { metrics } = await world.startProcessor();

    const traceId = 'a'.repeat(32);
    const parentSpanId = 'b'.repeat(16);
    const requests = Array.from({ length: 20 }, (_, i) =>
      world.request(`r${i}`, { type: 'device', id: 'dev-1' }),
    );
    await world.publish(requests, { traceparent: `00-${traceId}-${parentSpanId}-01` });

    await world.events.waitFor((evs) => terminalIds(evs).size === 20, '20 outcomes');
    assert.deepEqual(
      device.ids(),
      requests.map((r) => r.id),
      'received once each, in publish order',
    );
    for (const r of requests) {
      const [ev, ...more] = world.events.of(r.id);
      assert.equal(more.length, 0);
      assert.equal(ev?.outcome, 'delivered');
      assert.equal(ev?.terminal, true);
      assert.equal(ev?.source, 'async');
      assert.equal(ev?.deviceId, 'dev-1');
      assert.equal(ev?.attempts, 1);
      assert.ok((ev?.latencyMs ?? -1) >= 0);
    }

    // A record's process span ends once its outcome is committed, which can be just after the
    // event is visible on the topic: wait for the spans themselves.
    const processSpans = () =>
      recorder
        .spans()
        .filter(
          (s) => s.name === `process ${world.topics.pushRequests}` && s.spanContext().traceId === traceId,
        );
    await waitUntil(
      async () => {
        await recorder.flush();
        return processSpans().length >= 20;
      },
      { what: '20 process spans ended' },
    );
    const process = processSpans();
    assert.equal(process.length, 20, 'one process span per record, in the publisher trace');
    assert.ok(process.every((s) => s.parentSpanContext?.spanId === parentSpanId));
    const deliver = recorder
      .spans()
      .filter((s) => s.name === 'deliver' && s.spanContext().traceId === traceId);
    assert.ok(deliver.length >= 20, 'router spans are children of the process span');

    assert.equal(await counter(metrics, 'pushline_processor_records_total', { result: 'received' }), 20);
    assert.equal(await counter(metrics, 'pushline_processor_records_total', { result: 'processed' }), 20);
    assert.equal(
      await counter(metrics, 'pushline_processor_outcomes_total', {
        outcome: 'delivered',
        target_type: 'device',
      }),
      20,
    );
    assert.equal(await counter(metrics, 'pushline_publish_to_ack_seconds_count', { source: 'async' }), 20);
  });

  it('fans a user message out to the user’s devices on two servers', async () => {
    const a = await world.startConnectionServer('a');
    const b = await world.startConnectionServer('b');
    const phone = await world.connectDevice(a, 'phone', 'alice');
    const laptop = await world.connectDevice(b, 'laptop', 'alice');
    const other = await world.connectDevice(b, 'bobs-phone', 'bob');
    await world.startProcessor();

    await world.publish([world.request('u1', { type: 'user', id: 'alice' })]);
    await world.events.waitFor((evs) => evs.filter((e) => e.requestId === 'u1').length === 2, 'two outcomes');
    assert.deepEqual(phone.ids(), ['u1']);
    assert.deepEqual(laptop.ids(), ['u1']);
    assert.deepEqual(other.ids(), []);
    const events = world.events.of('u1');
    assert.deepEqual(events.map((e) => e.deviceId).sort(), ['laptop', 'phone']);
    assert.ok(events.every((e) => e.outcome === 'delivered' && e.terminal && e.target.type === 'user'));

    // A user with nothing connected gets one event saying so.
    await world.publish([world.request('u2', { type: 'user', id: 'carol' })]);
    await world.events.waitFor((evs) => evs.some((e) => e.requestId === 'u2'), 'carol outcome');
    const [none] = world.events.of('u2');
    assert.equal(none?.outcome, 'not_connected');
    assert.equal(none?.reason, 'no_connected_devices');
    assert.equal(none?.deviceId, undefined);
  });

  it('broadcasts a topic message to its subscribers on every server, as one event', async () => {
    const a = await world.startConnectionServer('a');
    const b = await world.startConnectionServer('b');
    const one = await world.connectDevice(a, 'sub-1', 'u1', ['news']);
    const two = await world.connectDevice(b, 'sub-2', 'u2', ['news']);
    const outsider = await world.connectDevice(b, 'not-sub', 'u3', ['news']);
    for (const d of [one, two]) {
      assert.deepEqual(await d.socket.emitWithAck('subscribe', { topic: 'news' }), {
        ok: true,
        topic: 'news',
      });
    }
    const { metrics } = await world.startProcessor();
    await world.publish([world.request('t1', { type: 'topic', id: 'news' })]);
    await world.events.waitFor((evs) => terminalIds(evs).has('t1'), 'broadcast outcome');
    assert.deepEqual(one.ids(), ['t1']);
    assert.deepEqual(two.ids(), ['t1']);
    assert.deepEqual(outsider.ids(), []);
    const [ev, ...more] = world.events.of('t1');
    assert.equal(more.length, 0);
    assert.equal(ev?.outcome, 'delivered');
    assert.equal(ev?.deliveredCount, 2);
    assert.equal(ev?.deviceId, undefined);
    // Identity 6 (docs/observability.md): the publish → ack histogram counts device acks only.
    assert.equal(
      await counter(metrics, 'pushline_processor_outcomes_total', {
        outcome: 'delivered',
        target_type: 'topic',
      }),
      1,
    );
    assert.equal(await counter(metrics, 'pushline_publish_to_ack_seconds_count', { source: 'async' }), 0);
  });

  it('keeps its device cache correct from connection events and exposes its hit ratio', async () => {
    const a = await world.startConnectionServer('a');
    const b = await world.startConnectionServer('b');
    const { processor, metrics } = await world.startProcessor();
    const invalidations = (type: string) =>
      counter(metrics, 'pushline_processor_cache_invalidations_total', { type });

    const first = await world.connectDevice(a, 'mover');
    await world.publish([world.request('m1', { type: 'device', id: 'mover' })]);
    await world.events.waitFor((evs) => terminalIds(evs).has('m1'), 'm1');
    assert.equal(world.events.of('m1')[0]?.attempts, 1);
    assert.deepEqual(first.ids(), ['m1']);

    // The device moves to server b; the processor's cached location (server a) is now stale.
    await first.disconnect();
    const moved = await world.connectDevice(b, 'mover');
    // Every event of the move is on the topic, and the processor's own cache group has read it.
    await collectRecords(world.kafka, world.topics.connectionEvents, 3, {
      filter: (r) => r.key === 'mover',
    });
    const admin = world.kafka.admin();
    try {
      const cacheGroup = `${world.groupId}.cache.${processor.instanceId}`;
      await waitUntil(async () => (await admin.groupLag(cacheGroup, world.topics.connectionEvents)) === 0, {
        what: 'connection events applied',
      });
    } finally {
      await admin.close();
    }
    assert.ok((await invalidations('disconnected')) >= 1);
    await world.publish([world.request('m2', { type: 'device', id: 'mover' })]);
    await world.events.waitFor((evs) => terminalIds(evs).has('m2'), 'm2');
    const [m2] = world.events.of('m2');
    assert.equal(m2?.outcome, 'delivered');
    assert.equal(m2?.attempts, 1, 'delivered straight to the new server, not via a stale entry');
    assert.deepEqual(moved.ids(), ['m2']);

    // Same device again: answered from the cache.
    await world.publish([world.request('m3', { type: 'device', id: 'mover' })]);
    await world.events.waitFor((evs) => terminalIds(evs).has('m3'), 'm3');
    assert.ok(processor.locator.stats.hits >= 1);
    const text = await (await fetch(`${processor.opsUrl}/metrics`)).text();
    const ratio =
      findSamples(parsePrometheusText(text), 'pushline_processor_locator_hit_ratio')[0]?.value ?? 0;
    assert.ok(ratio > 0 && ratio < 1, `hit ratio ${ratio}`);
    for (const name of [
      'pushline_processor_records_total',
      'pushline_processor_outcomes_total',
      'pushline_processor_in_flight',
      'pushline_processor_consumer_lag',
      'pushline_publish_to_ack_seconds',
      'pushline_offline_stored_total',
      'pushline_offline_expired_total',
      'pushline_processor_loop_failures_total',
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }
    assert.equal((await fetch(`${processor.opsUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${processor.opsUrl}/readyz`)).status, 200);
  });

  it('keeps messages with a ttl for an offline device and delivers them in order on reconnect', async () => {
    const server = await world.startConnectionServer('a');
    const { metrics } = await world.startProcessor();
    const target = { type: 'device', id: 'dev-off' } as const;
    const stored = ['s1', 's2', 's3'].map((id) => world.request(id, target, { ttlSeconds: 60 }));
    await world.publish([...stored, world.request('no-ttl', target)]);

    await world.events.waitFor(
      (evs) => evs.filter((e) => e.deviceId === 'dev-off').length === 4,
      'four events',
    );
    for (const r of stored) {
      const [ev] = world.events.of(r.id);
      assert.equal(ev?.terminal, false);
      assert.equal(ev?.stored, true);
      assert.equal(ev?.outcome, 'not_connected');
    }
    const [noTtl] = world.events.of('no-ttl');
    assert.equal(noTtl?.terminal, true);
    assert.equal(noTtl?.outcome, 'not_connected');
    assert.equal(await counter(metrics, 'pushline_offline_stored_total'), 3);

    const device = await world.connectDevice(server, 'dev-off');
    await world.events.waitFor(
      (evs) => stored.every((r) => terminalIds(evs).has(r.id)),
      'stored ones delivered',
    );
    assert.deepEqual(device.ids(), ['s1', 's2', 's3']);
    for (const r of stored) {
      const terminal = world.events.terminal(r.id);
      assert.equal(terminal.length, 1);
      assert.equal(terminal[0]?.outcome, 'delivered');
      assert.equal(terminal[0]?.source, 'offline');
      assert.equal(terminal[0]?.attempts, 2);
    }

    // Newer live messages come after the stored ones.
    await world.publish([world.request('live', target)]);
    await world.events.waitFor((evs) => terminalIds(evs).has('live'), 'live delivered');
    assert.deepEqual(device.ids(), ['s1', 's2', 's3', 'live']);
  });

  it('drains a message it stored itself when the device came back elsewhere during the attempt', async () => {
    const a = await world.startConnectionServer('a');
    const b = await world.startConnectionServer('b');
    await world.startProcessor();
    const old = await world.connectDevice(a, 'roamer', 'user-1', undefined, { ack: false });
    const reached = new Promise<void>((resolve) => old.socket.once('message', () => resolve()));
    await world.publish([world.request('r1', { type: 'device', id: 'roamer' }, { ttlSeconds: 60 })]);
    await reached;
    // Back on server b while the processor waits for the old connection's ack: b drains an empty
    // inbox on connect, and the old connection, closed as replaced, answers not_connected, so the
    // processor stores the message after that drain.
    const back = await world.connectDevice(b, 'roamer');
    await world.events.waitFor((evs) => terminalIds(evs).has('r1'), 'r1 delivered');
    const [terminal, ...more] = world.events.terminal('r1');
    assert.equal(more.length, 0);
    assert.equal(terminal?.outcome, 'delivered');
    assert.deepEqual(back.ids(), ['r1']);
  });

  it('records expired when the ttl runs out before the device comes back', async () => {
    const { metrics } = await world.startProcessor();
    await world.publish([world.request('short', { type: 'device', id: 'dev-gone' }, { ttlSeconds: 1 })]);
    await world.events.waitFor((evs) => terminalIds(evs).has('short'), 'expired outcome');
    const events = world.events.of('short');
    assert.deepEqual(
      events.map((e) => [e.outcome, e.terminal, e.source]),
      [
        ['not_connected', false, 'async'],
        ['expired', true, 'offline'],
      ],
    );
    assert.equal(events[1]?.reason, 'ttl_elapsed');
    assert.ok((events[1]?.latencyMs ?? 0) >= 1000);
    await waitUntil(
      async () => (await counter(metrics, 'pushline_offline_expired_total', { reason: 'ttl' })) === 1,
    );

    // A request that already outlived its ttl in Kafka is never delivered.
    await world.publish([
      world.request(
        'late',
        { type: 'device', id: 'dev-gone' },
        { ttlSeconds: 1, createdAt: Date.now() - 5000 },
      ),
    ]);
    await world.events.waitFor((evs) => terminalIds(evs).has('late'), 'late outcome');
    assert.deepEqual(
      world.events.of('late').map((e) => [e.outcome, e.terminal, e.source]),
      [['expired', true, 'async']],
    );
  });

  it('past its origin’s quota of stored messages, a request ends with its live outcome, not stored', async () => {
    await world.startProcessor({ PUSHLINE_OFFLINE_QUOTA_MESSAGES: '1' });
    const target = { type: 'device', id: 'dev-away' } as const;
    await world.publish([world.request('q-1', target, { ttlSeconds: 600, origin: 'key-a' })]);
    await world.events.waitFor((evs) => evs.some((e) => e.requestId === 'q-1'), 'first stored');
    await world.publish([
      world.request('q-2', target, { ttlSeconds: 600, origin: 'key-a' }),
      // Another origin has its own quota.
      world.request('q-3', target, { ttlSeconds: 600, origin: 'key-b' }),
    ]);
    await world.events.waitFor(
      (evs) => evs.some((e) => e.requestId === 'q-2') && evs.some((e) => e.requestId === 'q-3'),
      'second and third outcome',
    );
    const summary = (id: string) =>
      world.events.of(id).map((e) => [e.outcome, e.terminal, e.stored ?? false, e.reason ?? null]);
    assert.deepEqual(summary('q-1'), [['not_connected', false, true, 'not_registered']]);
    assert.deepEqual(summary('q-2'), [['not_connected', true, false, 'quota_exceeded']]);
    assert.deepEqual(summary('q-3'), [['not_connected', false, true, 'not_registered']]);
  });

  it('dead-letters bad records with the reason in the headers while good ones keep flowing', async () => {
    const server = await world.startConnectionServer('a');
    const device = await world.connectDevice(server, 'dev-1');
    const { metrics } = await world.startProcessor({ PUSHLINE_MAX_PAYLOAD_BYTES: '64' });
    const key = 'device:dev-1';
    const good = (id: string) => ({
      key,
      value: JSON.stringify(world.request(id, { type: 'device', id: 'dev-1' })),
    });
    await world.publishRaw([
      good('g1'),
      { key, value: '{"v":1, nope' },
      good('g2'),
      {
        key,
        value: JSON.stringify({ v: 1, id: 'bad-schema', target: { type: 'planet', id: 'x' }, payload: 1 }),
      },
      good('g3'),
      {
        key,
        value: JSON.stringify(
          world.request('too-big', { type: 'device', id: 'dev-1' }, { payload: 'x'.repeat(100) }),
        ),
      },
      good('g4'),
    ]);
    const dlq = await collectRecords(world.kafka, world.topics.pushRequestsDlq, 3);
    await world.events.waitFor((evs) => terminalIds(evs).size === 4, 'good ones delivered');
    assert.deepEqual(device.ids(), ['g1', 'g2', 'g3', 'g4']);

    const reasons = dlq.map((r) => r.headers[DlqHeaders.reason]);
    assert.deepEqual(reasons, ['unparseable', 'schema_invalid', 'payload_too_large']);
    for (const r of dlq) {
      assert.equal(r.key, key);
      assert.equal(r.headers[DlqHeaders.sourceTopic], world.topics.pushRequests);
      assert.match(r.headers[DlqHeaders.sourcePartition] ?? '', /^\d+$/);
      assert.match(r.headers[DlqHeaders.sourceOffset] ?? '', /^\d+$/);
      assert.ok((r.headers[DlqHeaders.detail] ?? '').length > 0);
    }
    assert.equal(dlq[0]?.value?.toString(), '{"v":1, nope', 'the original value is kept');

    const received = await counter(metrics, 'pushline_processor_records_total', { result: 'received' });
    const parts = await Promise.all(
      ['dlq', 'duplicate', 'processed', 'failed'].map((result) =>
        counter(metrics, 'pushline_processor_records_total', { result }),
      ),
    );
    assert.equal(received, 7);
    assert.deepEqual(parts, [3, 0, 4, 0]);
  });

  it('two processors in one group share the partitions and one takes over when the other leaves', async () => {
    const first = await world.startProcessor({ PUSHLINE_PROCESSOR_INSTANCE_ID: 'p1' });
    const second = await world.startProcessor({ PUSHLINE_PROCESSOR_INSTANCE_ID: 'p2' });
    await waitUntil(
      () =>
        first.processor.assignedPartitions.length > 0 &&
        second.processor.assignedPartitions.length > 0 &&
        first.processor.assignedPartitions.length + second.processor.assignedPartitions.length === 3,
      { what: 'both members assigned', timeoutMs: 20_000 },
    );
    const ready = await fetch(`${first.processor.opsUrl}/readyz`);
    assert.equal(ready.status, 200);

    const batch = (label: string) =>
      Array.from({ length: 30 }, (_, i) => world.request(`${label}${i}`, { type: 'device', id: `d${i}` }));
    const firstBatch = batch('a');
    await world.publish(firstBatch);
    await world.events.waitFor((evs) => terminalIds(evs).size === 30, 'first batch outcomes');
    const received = (m: Registry) => counter(m, 'pushline_processor_records_total', { result: 'received' });
    const p1 = await received(first.metrics);
    const p2 = await received(second.metrics);
    assert.ok(p1 > 0 && p2 > 0, `both processed some (${p1} + ${p2})`);
    assert.equal(p1 + p2, 30);

    await second.processor.close();
    await waitUntil(() => first.processor.assignedPartitions.length === 3, {
      what: 'the survivor takes every partition',
      timeoutMs: 20_000,
    });
    await world.publish(batch('b'));
    await world.events.waitFor((evs) => terminalIds(evs).size === 60, 'second batch outcomes');
    assert.equal(await received(first.metrics), p1 + 30);
    assert.ok(world.events.events.every((e) => e.outcome === 'not_connected'));
    assert.equal(world.events.events.length, 60, 'no request recorded twice');
  });

  it('killed mid-stream and restarted: every request ends with an outcome; SIGTERM exits 0', async () => {
    const server = await world.startConnectionServer('a');
    const devices = await Promise.all(['k1', 'k2', 'k3'].map((id) => world.connectDevice(server, id)));
    const env = { PUSHLINE_PROCESSOR_MAX_IN_FLIGHT: '4' };
    const firstChild = world.spawnProcessor(env);

    const requests = Array.from({ length: 300 }, (_, i) =>
      world.request(`k${i}`, { type: 'device', id: `k${(i % 3) + 1}` }),
    );
    await world.publish(requests);
    await world.events
      .waitFor((evs) => terminalIds(evs).size >= 30, 'some outcomes before the kill', 30_000)
      .catch((err: unknown) => {
        throw new Error(`${String(err)}\n${outputOf(firstChild)}`);
      });
    firstChild.kill('SIGKILL');
    await once(firstChild, 'exit');
    const beforeRestart = terminalIds(world.events.events).size;
    assert.ok(beforeRestart < 300, 'killed mid-stream');

    const secondChild = world.spawnProcessor(env);
    await world.events
      .waitFor((evs) => terminalIds(evs).size === 300, 'every request has an outcome', 60_000)
      .catch((err: unknown) => {
        throw new Error(`${String(err)}\n${outputOf(secondChild)}`);
      });

    // Duplicates of an outcome can only come from records whose outcome reached Kafka but whose
    // completion marker did not reach Redis before the kill: at most the in-flight bound.
    const counts = new Map<string, number>();
    for (const e of world.events.events) counts.set(e.requestId, (counts.get(e.requestId) ?? 0) + 1);
    const duplicated = [...counts.values()].filter((n) => n > 1).length;
    assert.ok(duplicated <= 4, `${duplicated} duplicated outcomes`);
    assert.ok(world.events.events.every((e) => e.outcome === 'delivered'));
    // Devices stayed connected: each saw each id at most once on its connection, in order.
    for (const d of devices) {
      const ids = d.ids();
      assert.equal(new Set(ids).size, ids.length, `${d.deviceId} saw no id twice`);
      const expected = requests.filter((r) => r.target.id === d.deviceId).map((r) => r.id);
      assert.deepEqual(ids, expected, `${d.deviceId} in order`);
    }

    secondChild.kill('SIGTERM');
    const [code, signal] = (await once(secondChild, 'exit')) as [number | null, NodeJS.Signals | null];
    assert.equal(signal, null, outputOf(secondChild));
    assert.equal(code, 0, outputOf(secondChild));
  });
});
