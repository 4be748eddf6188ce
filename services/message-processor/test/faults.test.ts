import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { WebSocketServer } from 'ws';
import { CHANNEL_PROTOCOL, type ChannelCallsFrame } from '@pushline/protocol';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, it } from 'node:test';
import { partitionForKey } from '@pushline/kafka';
import { registryKeys } from '@pushline/registry';
import { DlqHeaders, pushTargetKey, type DeliveryEvent, type PushTarget } from '@pushline/protocol';
import { findSamples, parsePrometheusText, type Registry } from '@pushline/telemetry';
import { collectRecords, waitUntil, within } from '@pushline/testkit';
import { OwnRedis, World, outputOf } from './harness.ts';

const PARTITIONS = 3;

async function sample(metrics: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const families = parsePrometheusText(await metrics.metrics());
  return findSamples(families, name, labels).reduce((sum, s) => sum + s.value, 0);
}

interface Readiness {
  readonly status: number;
  readonly detail: {
    readonly redis?: boolean;
    readonly pausedFor?: string[];
    readonly stalledPartitions?: { partition: number }[];
  };
}

/** /readyz within a second (a readiness probe that hangs is a failed one). */
async function readiness(opsUrl: string): Promise<Readiness | undefined> {
  try {
    const res = await fetch(`${opsUrl}/readyz`, { signal: AbortSignal.timeout(1_000) });
    const body = (await res.json()) as { detail?: Readiness['detail'] } & Readiness['detail'];
    return { status: res.status, detail: body.detail ?? body };
  } catch {
    return undefined;
  }
}

/** The first `<prefix><n>` whose push-requests key lands on `partition`. */
function idOn(type: PushTarget['type'], prefix: string, partition: number): string {
  for (let n = 0; ; n++) {
    const id = `${prefix}${n}`;
    if (partitionForKey(pushTargetKey({ type, id }), PARTITIONS) === partition) return id;
  }
}

const terminal = (events: readonly DeliveryEvent[], requestId: string) =>
  events.filter((e) => e.requestId === requestId && e.terminal);

describe('message processor under faults', () => {
  const worlds: World[] = [];
  const beforeWorlds: (() => Promise<void>)[] = [];
  const afterWorlds: (() => Promise<void>)[] = [];
  const world = async (options: { redisUrl?: string } = {}) => {
    const w = new World(options);
    worlds.push(w);
    await w.start();
    return w;
  };
  afterEach(async () => {
    for (const before of beforeWorlds.splice(0)) await before();
    for (const w of worlds.splice(0)) await w.close();
    for (const after of afterWorlds.splice(0)) await after();
  });

  it('a device that never acks delays only its own later messages, not another device’s on its partition', async () => {
    const w = await world();
    const server = await w.startConnectionServer('a');
    const partition = partitionForKey(pushTargetKey({ type: 'device', id: 'silent' }), PARTITIONS);
    const fastId = idOn('device', 'fast-', partition);
    const topic = idOn('topic', 'news-', partition);
    const silent = await w.connectDevice(server, 'silent', 'u-silent', [topic], { ack: false });
    assert.deepEqual(await silent.socket.emitWithAck('subscribe', { topic }), { ok: true, topic });
    const fast = await w.connectDevice(server, fastId, 'u-fast');
    await w.startProcessor({ PUSHLINE_DELIVERY_TIMEOUT_MS: '3000' });

    // The silent device gets a message and never acks it: its outcome waits out the 3 s timeout.
    await w.publish([
      w.request('to-silent', { type: 'device', id: 'silent' }),
      w.request('to-silent-2', { type: 'device', id: 'silent' }),
    ]);
    await waitUntil(() => silent.ids().includes('to-silent'), { what: 'the silent device to get it' });
    // A later record of another device on the same partition is delivered meanwhile.
    await w.publish([w.request('to-fast', { type: 'device', id: fastId })]);
    await w.events.waitFor((evs) => terminal(evs, 'to-fast').length === 1, 'to-fast delivered');
    assert.equal(terminal(w.events.events, 'to-fast')[0]?.outcome, 'delivered');
    assert.deepEqual(terminal(w.events.events, 'to-silent'), [], 'the silent device’s ack is still awaited');
    assert.deepEqual(silent.ids(), ['to-silent'], 'its own next message waits behind it');

    // A broadcast whose subscriber never acks holds up no other key either.
    await w.publish([w.request('broadcast', { type: 'topic', id: topic })]);
    await waitUntil(() => silent.ids().includes('broadcast'), {
      what: 'the broadcast to reach the subscriber',
    });
    await w.publish([w.request('to-fast-2', { type: 'device', id: fastId })]);
    await w.events.waitFor((evs) => terminal(evs, 'to-fast-2').length === 1, 'to-fast-2 delivered');
    assert.deepEqual(terminal(w.events.events, 'broadcast'), [], 'the broadcast still waits for its ack');
    assert.deepEqual(fast.ids(), ['to-fast', 'to-fast-2']);

    // In the end the silent device’s messages time out in order, and the broadcast counts no ack.
    await w.events.waitFor(
      (evs) => ['to-silent', 'to-silent-2', 'broadcast'].every((id) => terminal(evs, id).length === 1),
      'the silent outcomes',
      30_000,
    );
    assert.equal(terminal(w.events.events, 'to-silent')[0]?.outcome, 'timeout');
    assert.equal(terminal(w.events.events, 'to-silent-2')[0]?.outcome, 'timeout');
    assert.deepEqual(
      silent.ids().filter((id) => id.startsWith('to-silent')),
      ['to-silent', 'to-silent-2'],
    );
    assert.equal(terminal(w.events.events, 'broadcast')[0]?.deliveredCount, 0);
  });

  it('no record stops a partition: a 2,000-deep record and one whose handling always throws go to the DLQ', async () => {
    const w = await world();
    const server = await w.startConnectionServer('a');
    // A registry entry of the wrong type makes every delivery to this user throw (WRONGTYPE)
    // while Redis itself is healthy: a record that fails on every attempt.
    await w.redis.set(registryKeys(w.keyPrefix).user('corrupt'), 'not a set');
    const partition = partitionForKey('user:corrupt', PARTITIONS);
    const deviceId = idOn('device', 'dev-', partition);
    const device = await w.connectDevice(server, deviceId);
    const { processor, metrics } = await w.startProcessor();

    const key = pushTargetKey({ type: 'device', id: deviceId });
    const depth = 2_000;
    const deep = `{"v":1,"id":"deep","target":{"type":"device","id":"${deviceId}"},"createdAt":${Date.now()},"payload":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    await w.publish([w.request('poison-1', { type: 'user', id: 'corrupt' })]);
    await w.publishRaw([{ key, value: deep }]);
    await w.publish([
      w.request('good-1', { type: 'device', id: deviceId }),
      w.request('poison-2', { type: 'user', id: 'corrupt' }),
      w.request('good-2', { type: 'device', id: deviceId }),
    ]);

    // Both poison records reach the DLQ, and the partition's committed offset passes them.
    const poisoned = await collectRecords(w.kafka, w.topics.pushRequestsDlq, 2, {
      filter: (r) => r.headers[DlqHeaders.reason] === 'processing_failed',
      timeoutMs: 30_000,
    });
    assert.equal(poisoned.length, 2);
    const admin = w.kafka.admin();
    try {
      await waitUntil(async () => (await admin.groupLag(w.groupId, w.topics.pushRequests)) === 0, {
        what: 'every record committed',
      });
    } finally {
      await admin.close();
    }
    await w.events.waitFor(
      (evs) => terminal(evs, 'good-1').length === 1 && terminal(evs, 'good-2').length === 1,
      'the good records on the same partition',
    );
    assert.deepEqual(device.ids(), ['good-1', 'good-2']);
    const dlq = await collectRecords(w.kafka, w.topics.pushRequestsDlq, 3);
    const byId = new Map(
      dlq.map((r) => [
        r.value ? ((JSON.parse(r.value.toString()) as { id?: string }).id ?? '') : '',
        r.headers,
      ]),
    );
    assert.equal(byId.get('deep')?.[DlqHeaders.reason], 'too_deep');
    assert.equal(byId.get('deep')?.[DlqHeaders.sourcePartition], String(partition));
    for (const id of ['poison-1', 'poison-2']) {
      assert.equal(byId.get(id)?.[DlqHeaders.reason], 'processing_failed', id);
      assert.match(byId.get(id)?.[DlqHeaders.detail] ?? '', /WRONGTYPE/, id);
    }
    const [deepRecord] = dlq.filter((r) => r.headers[DlqHeaders.reason] === 'too_deep');
    assert.equal(deepRecord?.value?.length, deep.length, 'the original value is kept');

    await waitUntil(
      async () => (await sample(metrics, 'pushline_processor_records_total', { result: 'dlq' })) === 3,
      { what: 'three dead letters counted' },
    );
    const count = (result: string) => sample(metrics, 'pushline_processor_records_total', { result });
    assert.equal(await count('received'), 5);
    assert.deepEqual(await Promise.all(['dlq', 'duplicate', 'processed', 'failed'].map(count)), [3, 0, 2, 0]);
    assert.equal(await sample(metrics, 'pushline_processor_dlq_total', { reason: 'processing_failed' }), 2);
    assert.equal(await sample(metrics, 'pushline_processor_dlq_total', { reason: 'too_deep' }), 1);
    // Each poison record was tried three times: two retries each, none blamed on Redis.
    assert.equal(await sample(metrics, 'pushline_processor_record_retries_total', { cause: 'record' }), 4);
    assert.equal(await sample(metrics, 'pushline_processor_record_retries_total', { cause: 'redis' }), 0);
    const ready = await readiness(processor.opsUrl);
    assert.equal(ready?.status, 200);
  });

  it('Redis hung, then killed, mid-stream: nothing is consumed meanwhile, everything ends with exactly one terminal event', async () => {
    const redis = await OwnRedis.start();
    // A failed assertion can leave Redis hung or dead: bring it back before closing what uses it.
    beforeWorlds.push(() => redis.revive());
    afterWorlds.push(() => redis.stop());
    const w = await world({ redisUrl: redis.url });
    const server = await w.startConnectionServer('a');
    const devices = await Promise.all(['r1', 'r2', 'r3'].map((id) => w.connectDevice(server, id)));
    const { processor, metrics } = await w.startProcessor({ PUSHLINE_PROCESSOR_STALL_AFTER_MS: '1000' });
    const requests: string[] = [];
    const deviceOf = new Map<string, string>();
    const publish = async (label: string, count: number) => {
      const batch = Array.from({ length: count }, (_, i) =>
        w.request(`${label}${i}`, { type: 'device', id: `r${(i % 3) + 1}` }),
      );
      for (const r of batch) {
        requests.push(r.id);
        deviceOf.set(r.id, r.target.id);
      }
      await w.publish(batch);
      return batch.map((r) => r.id);
    };
    const terminalCount = () =>
      new Set(w.events.events.filter((e) => e.terminal).map((e) => e.requestId)).size;
    const probeFailures = () =>
      sample(metrics, 'pushline_processor_loop_failures_total', { loop: 'probe_redis' });
    /** Waits until the processor has failed `n` more probes of Redis: time spent while it is down. */
    const whileDown = async (n: number) => {
      const from = await probeFailures();
      await waitUntil(async () => (await probeFailures()) >= from + n, {
        what: `${n} more failed probes`,
        timeoutMs: 30_000,
      });
    };
    /** Goes through one outage: requests in flight when it starts, more published during it. */
    const outage = async (
      label: string,
      start: () => void | Promise<void>,
      end: () => void | Promise<void>,
    ) => {
      const before = await publish(`${label}-before-`, 60);
      await w.events.waitFor(
        (evs) => before.filter((id) => terminal(evs, id).length > 0).length >= 10,
        `some of ${label} delivered before the outage`,
      );
      await start();
      await waitUntil(async () => (await readiness(processor.opsUrl))?.detail.redis === false, {
        what: '/readyz to report Redis down',
      });
      await whileDown(2);
      const settled = terminalCount();
      const during = await publish(`${label}-during-`, 30);
      await waitUntil(
        async () => (await sample(metrics, 'pushline_processor_partition_unfinished')) >= during.length,
        { what: 'the records published during the outage to be taken in' },
      );
      await whileDown(3);
      assert.equal(terminalCount(), settled, `no outcome recorded while Redis is ${label}`);
      const received = devices.flatMap((d) => d.ids());
      assert.deepEqual(
        during.filter((id) => received.includes(id)),
        [],
        'nothing published during the outage was delivered',
      );
      const ready = await readiness(processor.opsUrl);
      assert.equal(ready?.status, 503);
      assert.deepEqual(ready?.detail.pausedFor, ['redis']);
      assert.ok((ready?.detail.stalledPartitions?.length ?? 0) > 0, 'the stalled partitions are named');
      await end();
      await w.events.waitFor(
        (evs) => requests.every((id) => terminal(evs, id).length > 0),
        `everything up to ${label} delivered after Redis came back`,
        60_000,
      );
    };

    await outage(
      'hung',
      () => redis.hang(),
      () => redis.resume(),
    );
    await outage(
      'killed',
      () => redis.kill(),
      () => redis.restart(),
    );

    for (const id of requests) {
      const events = terminal(w.events.events, id);
      assert.equal(events.length, 1, `${id}: exactly one terminal event`);
      assert.equal(events[0]?.outcome, 'delivered', id);
    }
    for (const d of devices) {
      assert.deepEqual(
        d.ids(),
        requests.filter((id) => deviceOf.get(id) === d.deviceId),
        `${d.deviceId} got each of its messages once, in publish order`,
      );
    }
    assert.equal(await sample(metrics, 'pushline_processor_dlq_total'), 0, 'no good record dead-lettered');
    assert.equal(await sample(metrics, 'pushline_processor_records_total', { result: 'failed' }), 0);
    assert.ok((await sample(metrics, 'pushline_processor_record_retries_total', { cause: 'record' })) === 0);
    await waitUntil(async () => (await readiness(processor.opsUrl))?.status === 200, {
      what: '/readyz to recover',
    });
  });

  /**
   * A processor (its own OS process) sends a request with `ttlSeconds` to a device and is killed
   * with -9 before the device acks; then the device acks and a replacement processor starts.
   */
  async function killedWhileTheDeviceHasIt(ttlSeconds: number) {
    const w = await world();
    const server = await w.startConnectionServer('a');
    let ackFirst: (() => void) | undefined;
    let gotFirst!: () => void;
    const received = new Promise<void>((resolve) => (gotFirst = resolve));
    const acker = await w.connectDevice(server, 'acker', 'user-1', undefined, {
      onMessage: (_msg, ack) => {
        if (ackFirst) return ack();
        ackFirst = ack;
        gotFirst();
      },
    });
    const first = w.spawnProcessor({ PUSHLINE_LOG_LEVEL: 'info' });
    await waitUntil(() => outputOf(first).includes('message processor started'), {
      what: 'the first processor to start',
      timeoutMs: 30_000,
    });
    await w.publish([w.request('held', { type: 'device', id: 'acker' }, { ttlSeconds })]);
    await within(received, 20_000, 'the device to get the message').catch((err: unknown) => {
      throw new Error(`${String(err)}\n${outputOf(first)}`);
    });
    // The processor dies waiting for the ack, holding the request's claim; the device then acks.
    first.kill('SIGKILL');
    await once(first, 'exit');
    ackFirst?.();

    const second = w.spawnProcessor();
    await w.events
      .waitFor((evs) => terminal(evs, 'held').length > 0, 'the replacement’s outcome', 25_000)
      .catch((err: unknown) => {
        throw new Error(`${String(err)}\n${outputOf(second)}`);
      });
    return { events: terminal(w.events.events, 'held'), ids: acker.ids() };
  }

  it('killed with -9 after the device got a message: the replacement takes over at once and reports delivered', async () => {
    // A ttl well below the old claim TTL (60 s), well above the group session timeout (6 s).
    const { events, ids } = await killedWhileTheDeviceHasIt(30);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.outcome, 'delivered', 'a message the device acked is reported delivered');
    assert.deepEqual(ids, ['held'], 'the connection did not get it twice');
  });

  it('killed with -9 after the device got a message whose ttl runs out before the takeover: still delivered', async () => {
    // The ttl ends before the group hands the partition over (session timeout 6 s): the
    // replacement finds the request sent in time by the dead processor and repeats the attempt.
    const { events, ids } = await killedWhileTheDeviceHasIt(3);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.outcome, 'delivered', 'not expired: the device acked it');
    assert.deepEqual(ids, ['held'], 'the connection did not get it twice');
  });

  it('a user fan-out where one device’s server fails gives every device its own outcome and stores the failed one', async () => {
    const w = await world();
    const server = await w.startConnectionServer('a');
    const phone = await w.connectDevice(server, 'phone', 'alice');
    // The laptop's entry points at a connection server whose handling of every call fails.
    let brokenRequests = 0;
    const broken: Server = createServer();
    const wss = new WebSocketServer({ server: broken, handleProtocols: () => CHANNEL_PROTOCOL });
    wss.on('connection', (ws) =>
      ws.on('message', (data: Buffer) => {
        const { calls } = JSON.parse(data.toString()) as ChannelCallsFrame;
        brokenRequests += calls.length;
        ws.send(
          JSON.stringify({
            results: calls.map((c) => ({ id: c.id, error: { code: 'internal_error', message: 'boom' } })),
          }),
        );
      }),
    );
    broken.listen(0, '127.0.0.1');
    await once(broken, 'listening');
    afterWorlds.push(
      () =>
        new Promise<void>((resolve) => {
          for (const ws of wss.clients) ws.terminate();
          broken.close(() => resolve());
        }),
    );
    const now = Date.now();
    await w.registry.register(
      {
        deviceId: 'laptop',
        userId: 'alice',
        serverId: 'broken-server',
        serverUrl: `http://127.0.0.1:${(broken.address() as AddressInfo).port}`,
        connectionId: 'c-broken',
        connectedAt: now,
        lastSeen: now,
      },
      60,
    );
    await w.startProcessor();
    await w.publish([
      w.request('with-ttl', { type: 'user', id: 'alice' }, { ttlSeconds: 60 }),
      w.request('no-ttl', { type: 'user', id: 'alice' }),
    ]);
    await w.events.waitFor(
      (evs) => evs.filter((e) => e.requestId === 'with-ttl' || e.requestId === 'no-ttl').length === 4,
      'an event per device per request',
    );
    const of = (requestId: string, deviceId: string) =>
      w.events.events.filter((e) => e.requestId === requestId && e.deviceId === deviceId);
    for (const id of ['with-ttl', 'no-ttl']) {
      assert.deepEqual(
        of(id, 'phone').map((e) => [e.outcome, e.terminal]),
        [['delivered', true]],
      );
    }
    const [stored] = of('with-ttl', 'laptop');
    assert.equal(stored?.terminal, false);
    assert.equal(stored?.stored, true);
    // A server whose handling failed may have handed the message over before failing: that is a
    // `timeout` ("may have been delivered"), never a claim that the device did not get it.
    assert.equal(stored?.outcome, 'timeout');
    assert.equal(stored?.reason, 'delivery_failed:server_error');
    const [lost] = of('no-ttl', 'laptop');
    assert.deepEqual(
      [lost?.outcome, lost?.terminal, lost?.reason],
      ['timeout', true, 'delivery_failed:server_error'],
    );
    assert.ok(brokenRequests >= 3, `the failed device was retried on its own (${brokenRequests} calls)`);
    assert.deepEqual(phone.ids(), ['with-ttl', 'no-ttl']);

    // The laptop comes back for real: its stored message is delivered.
    await w.registry.unregister('laptop', 'c-broken');
    const laptop = await w.connectDevice(server, 'laptop', 'alice');
    await w.events.waitFor(
      () => of('with-ttl', 'laptop').some((e) => e.terminal),
      'the stored one delivered',
    );
    assert.deepEqual(laptop.ids(), ['with-ttl']);
    assert.equal(of('with-ttl', 'laptop').find((e) => e.terminal)?.outcome, 'delivered');
  });

  it('request ids are deduplicated per origin: two origins with one id are both delivered', async () => {
    const w = await world();
    const server = await w.startConnectionServer('a');
    const devices = await Promise.all(['o1', 'o2', 'o3', 'o4'].map((id) => w.connectDevice(server, id)));
    const { metrics } = await w.startProcessor();
    await w.publish([
      w.request('same-id', { type: 'device', id: 'o1' }, { origin: 'key-a' }),
      w.request('same-id', { type: 'device', id: 'o2' }, { origin: 'key-b' }),
      w.request('same-id', { type: 'device', id: 'o3' }),
      // The same origin again: a duplicate of the first.
      w.request('same-id', { type: 'device', id: 'o4' }, { origin: 'key-a' }),
    ]);
    await w.events.waitFor(
      (evs) => evs.filter((e) => e.requestId === 'same-id').length === 3,
      'three outcomes',
    );
    await waitUntil(
      async () => (await sample(metrics, 'pushline_processor_records_total', { result: 'duplicate' })) === 1,
      { what: 'the same origin’s second record skipped' },
    );
    assert.deepEqual(
      devices.map((d) => d.ids()),
      [['same-id'], ['same-id'], ['same-id'], []],
    );
    assert.deepEqual(
      w.events.events
        .filter((e) => e.requestId === 'same-id')
        .map((e) => e.deviceId)
        .sort(),
      ['o1', 'o2', 'o3'],
    );
  });

  it('two origins reusing one request id for the same device both reach it: the connection keeps ids per origin', async () => {
    const w = await world();
    const server = await w.startConnectionServer('a');
    const device = await w.connectDevice(server, 'shared-dev');
    await w.startProcessor();
    await w.publish([
      w.request('shared-req', { type: 'device', id: 'shared-dev' }, { origin: 'key-a' }),
      w.request('shared-req', { type: 'device', id: 'shared-dev' }, { origin: 'key-b' }),
    ]);
    await w.events.waitFor(
      (evs) => evs.filter((e) => e.requestId === 'shared-req' && e.terminal).length === 2,
      'two terminal outcomes',
    );
    assert.deepEqual(
      w.events.events.filter((e) => e.requestId === 'shared-req' && e.terminal).map((e) => e.outcome),
      ['delivered', 'delivered'],
    );
    assert.deepEqual(
      device.ids(),
      ['shared-req', 'shared-req'],
      'the second was sent, not taken for the first',
    );
  });

  it('dead-letters a tombstone with a NULL value', async () => {
    const w = await world();
    const { metrics } = await w.startProcessor();
    await w.publishRaw([{ key: 'device:gone', value: null }]);
    const [dead] = await collectRecords(w.kafka, w.topics.pushRequestsDlq, 1);
    assert.equal(dead?.value, null, 'NULL, not an empty value');
    assert.equal(dead?.key, 'device:gone');
    assert.equal(dead?.headers[DlqHeaders.reason], 'unparseable');
    await waitUntil(
      async () => (await sample(metrics, 'pushline_processor_dlq_total', { reason: 'unparseable' })) === 1,
    );
  });

  it('refuses to start on topics replicated below the configured minimum, when told to refuse', async () => {
    const w = await world();
    const child = w.spawnProcessor({
      PUSHLINE_KAFKA_MIN_REPLICATION_FACTOR: '2',
      PUSHLINE_KAFKA_REPLICATION_CHECK: 'refuse',
      PUSHLINE_LOG_LEVEL: 'error',
    });
    const [code] = (await within(once(child, 'exit'), 30_000, 'the processor to exit')) as [number | null];
    assert.notEqual(code, 0, 'exits with an error');
    assert.match(outputOf(child), /UnderReplicatedTopicsError|replication factor 2/);
  });
});
