import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import { isCluster, sendAll, type RedisClient } from '@pushline/registry';
import { keysMatching, testRedis, uniquePrefix, waitUntil, watchRedisCommands } from '@pushline/testkit';
import { silentLogger, createMetricsRegistry, type Registry } from '@pushline/telemetry';
import { StoredMessage, type DeliverResult, type DeliveryEvent } from '@pushline/protocol';
import { OutboxRelay, RedisOfflineStore, type OfflineKeys } from '@pushline/offline-store';

function stored(requestId: string, overrides: Partial<StoredMessage> = {}): StoredMessage {
  const now = Date.now();
  return {
    v: 1,
    requestId,
    target: { type: 'device', id: 'dev-1' },
    payload: { n: requestId },
    createdAt: now,
    expiresAt: now + 60_000,
    attempts: 1,
    ...overrides,
  };
}

const delivered: DeliverResult = { outcome: 'delivered', latencyMs: 1 };

/**
 * The commands clients send that touch keys under `prefix`, seen through MONITOR (commands a
 * script runs are left out: one script call is one round trip).
 */
function watchCommands(redis: Redis, prefix: string) {
  return watchRedisCommands(
    redis,
    prefix,
    (args, source) => source !== 'lua' && args.some((a) => a.startsWith(prefix)),
  );
}

describe('RedisOfflineStore', () => {
  let redis: RedisClient;
  let prefix: string;
  /** The store's key names (partitioned on a cluster). */
  let keys: OfflineKeys;
  /** Entries in every partition's outbox. */
  const outboxLength = async () =>
    (
      await sendAll(
        redis,
        Array.from({ length: keys.partitions }, (_, p) => ['xlen', keys.outbox(p)] as const),
      )
    ).reduce<number>((sum, n) => sum + Number(n), 0);
  /** Outcomes of several devices: in order on one Redis; on a cluster each partition keeps its own order. */
  const acrossDevices = <T>(list: T[]): T[] => (keys.partitions > 1 ? [...list].sort() : list);
  let events: DeliveryEvent[];
  let metrics: Registry;
  let store: RedisOfflineStore;
  let relay: OutboxRelay;

  const makeStore = (maxPerDevice = 10, leaseMs = 30_000) =>
    new RedisOfflineStore({
      redis,
      keyPrefix: prefix,
      maxPerDevice,
      leaseMs,
      logger: silentLogger(),
      metrics,
    });
  /** The outcomes recorded so far: what the store's outbox holds, published through a relay. */
  const outcomes = async (): Promise<DeliveryEvent[]> => {
    await relay.flush();
    return events;
  };

  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await redis.quit();
  });
  beforeEach(() => {
    prefix = `${uniquePrefix('offline')}:`;
    events = [];
    metrics = createMetricsRegistry({}, false);
    store = makeStore();
    keys = store.keys;
    relay = new OutboxRelay({
      redis,
      keyPrefix: prefix,
      consumer: 'test',
      publish: async (published) => {
        events.push(...published);
      },
      logger: silentLogger(),
    });
  });

  it('drains stored messages oldest first and records one delivered outcome each', async () => {
    for (const id of ['m1', 'm2', 'm3'])
      assert.deepEqual(await store.store('dev-1', stored(id)), { stored: true, evicted: 0 });
    const seen: string[] = [];
    await store.drain('dev-1', async (msg) => {
      seen.push(msg.requestId);
      return delivered;
    });
    assert.deepEqual(seen, ['m1', 'm2', 'm3']);
    assert.deepEqual(
      (await outcomes()).map((e) => [e.requestId, e.outcome, e.terminal, e.source, e.attempts, e.deviceId]),
      [
        ['m1', 'delivered', true, 'offline', 2, 'dev-1'],
        ['m2', 'delivered', true, 'offline', 2, 'dev-1'],
        ['m3', 'delivered', true, 'offline', 2, 'dev-1'],
      ],
    );
    assert.equal(await store.pending('dev-1'), 0);
    // Only the counters and the (now empty) outboxes stay.
    const left = await keysMatching(redis, `${prefix}offline:*`);
    assert.deepEqual(
      left.filter((key) => !key.endsWith(':outbox')),
      [keys.seq(keys.partitionOf('dev-1'))],
    );
    assert.equal(await outboxLength(), 0);
  });

  it('draining an empty inbox is one round trip; n stored messages take 2n + 2', async (t) => {
    if (isCluster(redis)) {
      t.skip('MONITOR shows one node of a cluster');
      return;
    }
    const watch = await watchCommands(redis as Redis, prefix);
    try {
      await store.drain('dev-1', async () => delivered);
      const empty = await watch.take();
      assert.equal(empty.length, 1, `one command, got ${JSON.stringify(empty)}`);
      assert.equal(await redis.exists(keys.lock('dev-1')), 0, 'no lock left behind');

      for (const id of ['m1', 'm2', 'm3']) await store.store('dev-1', stored(id));
      await watch.take();
      await store.drain('dev-1', async () => delivered);
      // begin (takes the lock), lease + finish per message, and the last lease that finds the
      // queue empty and releases the lock in the same step.
      assert.equal((await watch.take()).length, 2 * 3 + 2);
      assert.equal(await redis.exists(keys.lock('dev-1')), 0);
      assert.equal((await outcomes()).length, 3);
    } finally {
      watch.close();
    }
  });

  it('withPending names the devices with stored messages, in one script call per 256 devices', async (t) => {
    const devices = Array.from({ length: 300 }, (_, i) => `dev-${i}`);
    await store.store('dev-3', stored('m1', { target: { type: 'device', id: 'dev-3' } }));
    await store.store('dev-299', stored('m2', { target: { type: 'device', id: 'dev-299' } }));
    // In flight counts too: dev-3's one message is leased by a drain that has not finished.
    let leased = false;
    void store.drain('dev-3', () => {
      leased = true;
      return new Promise<DeliverResult>(() => {});
    });
    await waitUntil(() => leased, { what: 'dev-3’s message to be leased' });
    assert.equal(await store.pending('dev-3'), 1, 'the pending count is loaded before MONITOR looks');

    if (isCluster(redis)) {
      assert.deepEqual([...(await store.withPending(devices))].sort(), ['dev-299', 'dev-3']);
      t.diagnostic('MONITOR shows one node of a cluster: calls not counted');
      return;
    }
    const watch = await watchCommands(redis as Redis, prefix);
    try {
      assert.deepEqual([...(await store.withPending([...devices, 'dev-3']))].sort(), ['dev-299', 'dev-3']);
      const calls = await watch.take();
      assert.deepEqual(
        calls.map((args) => Number(args[2])),
        [256 * 2, 44 * 2],
        'EVALSHA, sha, number of keys: two calls',
      );
    } finally {
      watch.close();
    }
  });

  it('storing the same request id twice keeps one copy', async () => {
    await store.store('dev-1', stored('m1'));
    assert.deepEqual(await store.store('dev-1', stored('m1')), { stored: true, evicted: 0, duplicate: true });
    assert.equal(await store.pending('dev-1'), 1);
  });

  it('puts a message back at the head and stops when the device is gone again', async () => {
    for (const id of ['m1', 'm2']) await store.store('dev-1', stored(id));
    let calls = 0;
    await store.drain('dev-1', async () => {
      calls++;
      return { outcome: 'not_connected', latencyMs: 0 };
    });
    assert.equal(calls, 1);
    assert.equal((await outcomes()).length, 0);

    const seen: [string, number][] = [];
    await store.drain('dev-1', async (msg) => {
      seen.push([msg.requestId, msg.attempts]);
      return delivered;
    });
    assert.deepEqual(seen, [
      ['m1', 2],
      ['m2', 1],
    ]);
    assert.deepEqual(
      (await outcomes()).map((e) => [e.requestId, e.attempts]),
      [
        ['m1', 3],
        ['m2', 2],
      ],
    );
  });

  it('a delivery that throws keeps the message', async () => {
    await store.store('dev-1', stored('m1'));
    await store.drain('dev-1', async () => {
      throw new Error('transport down');
    });
    assert.equal(await store.pending('dev-1'), 1);
    assert.equal((await outcomes()).length, 0);
  });

  it('records expired instead of delivering a message whose ttl passed', async () => {
    await store.store('dev-1', stored('old', { expiresAt: Date.now() - 1 }));
    await store.store('dev-1', stored('new'));
    const seen: string[] = [];
    await store.drain('dev-1', async (msg) => {
      seen.push(msg.requestId);
      return delivered;
    });
    assert.deepEqual(seen, ['new']);
    assert.deepEqual(
      (await outcomes()).map((e) => [e.requestId, e.outcome, e.reason]),
      [
        ['old', 'expired', 'ttl_elapsed'],
        ['new', 'delivered', undefined],
      ],
    );
  });

  it('evicts the oldest past maxPerDevice and records it expired (evicted)', async () => {
    store = makeStore(2);
    await store.store('dev-1', stored('m1'));
    await store.store('dev-1', stored('m2'));
    assert.deepEqual(await store.store('dev-1', stored('m3')), { stored: true, evicted: 1 });
    assert.deepEqual(
      (await outcomes()).map((e) => [e.requestId, e.outcome, e.reason, e.terminal]),
      [['m1', 'expired', 'evicted', true]],
    );
    const seen: string[] = [];
    await store.drain('dev-1', async (msg) => {
      seen.push(msg.requestId);
      return delivered;
    });
    assert.deepEqual(seen, ['m2', 'm3']);
  });

  it('sweeps expired messages once, across devices, and leaves live ones', async () => {
    const now = Date.now();
    await store.store('dev-1', stored('a', { expiresAt: now + 10 }));
    await store.store('dev-2', stored('b', { expiresAt: now + 20, target: { type: 'device', id: 'dev-2' } }));
    await store.store(
      'dev-2',
      stored('c', { expiresAt: now + 60_000, target: { type: 'device', id: 'dev-2' } }),
    );
    assert.equal(await store.sweepExpired(now), 0);
    assert.equal(await store.sweepExpired(now + 30), 2);
    assert.equal(await store.sweepExpired(now + 30), 0);
    assert.deepEqual((await outcomes()).map((e) => [e.deviceId, e.requestId, e.outcome]).sort(), [
      ['dev-1', 'a', 'expired'],
      ['dev-2', 'b', 'expired'],
    ]);
    assert.equal(await store.pending('dev-2'), 1);
    const metricsText = await metrics.metrics();
    assert.match(metricsText, /pushline_offline_expired_total\{reason="ttl"\} 2/);
    assert.match(metricsText, /pushline_offline_stored_total 3/);
  });

  it('drain racing the sweeper on the same messages records exactly one terminal outcome each', async () => {
    // Two stores on one Redis stand for two processes (a connection server draining, a
    // processor sweeping).
    let swept = 0;
    const sweeper = new RedisOfflineStore({
      redis,
      keyPrefix: prefix,
      maxPerDevice: 1000,
      logger: silentLogger(),
    });
    const count = 200;
    store = makeStore(1000);
    for (let i = 0; i < count; i++) await store.store('dev-1', stored(`m${i}`));
    // The sweeper's clock runs past every expiry while the drain still sees them live, and it
    // starts mid-drain, so drain and sweeper claim from the same queue at the same time.
    let sweeping = false;
    let sweeps: Promise<void> = Promise.resolve();
    await store.drain('dev-1', async (msg) => {
      if (msg.requestId === 'm50') {
        sweeping = true;
        sweeps = (async () => {
          while (sweeping) swept += await sweeper.sweepExpired(Date.now() + 120_000);
        })();
        await waitUntil(() => swept > 0, { what: 'a sweep' });
      }
      await new Promise((resolve) => setImmediate(resolve));
      return delivered;
    });
    sweeping = false;
    await sweeps;
    swept += await sweeper.sweepExpired(Date.now() + 120_000);

    const all = await outcomes();
    const ids = all.map((e) => e.requestId);
    assert.equal(new Set(ids).size, ids.length, 'no request recorded twice');
    assert.equal(ids.length, count, 'every request recorded');
    assert.ok(all.every((e) => e.terminal));
    const drained = all.filter((e) => e.outcome === 'delivered').length;
    assert.equal(all.filter((e) => e.outcome === 'expired').length, swept);
    // m0..m49 were delivered before the sweeps began; m50, in flight, may be taken back by the
    // sweeper (its clock is past the lease) and recorded expired instead.
    assert.ok(drained >= 50 && swept > 0, `both the drain and the sweeper recorded: ${drained}, ${swept}`);
    assert.equal(await store.pending('dev-1'), 0);
  });

  it('only one drain runs per device; a second one waits and then finds the queue empty', async () => {
    for (const id of ['m1', 'm2', 'm3']) await store.store('dev-1', stored(id));
    const seen: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const first = store.drain('dev-1', async (msg) => {
      seen.push(`a:${msg.requestId}`);
      if (msg.requestId === 'm1') await gate;
      return delivered;
    });
    // The second drain must not overtake the first one's m1 (order across servers).
    const second = store.drain('dev-1', async (msg) => {
      seen.push(`b:${msg.requestId}`);
      return delivered;
    });
    const skipped = store.drain('dev-1', async () => delivered, { waitForLock: false });
    await skipped;
    release();
    await Promise.all([first, second]);
    assert.deepEqual(seen, ['a:m1', 'a:m2', 'a:m3']);
    assert.equal((await outcomes()).length, 3);
  });

  it('a drain waiting for another finds what that one put back, even when nothing was queued as it began', async () => {
    // The other drain (say, to the device's old connection) holds the lock and the device's only
    // message in flight: the queue is empty, but the drain must wait, since a failed delivery
    // puts the message back.
    await store.store('dev-1', stored('m1'));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let leased!: () => void;
    const inFlight = new Promise<void>((resolve) => (leased = resolve));
    const old = store.drain('dev-1', async () => {
      leased();
      await gate;
      return { outcome: 'not_connected', latencyMs: 0 };
    });
    await inFlight;
    const seen: string[] = [];
    const next = store.drain('dev-1', async (msg) => {
      seen.push(msg.requestId);
      return delivered;
    });
    release();
    await Promise.all([old, next]);
    assert.deepEqual(seen, ['m1']);
    assert.deepEqual(
      (await outcomes()).map((e) => [e.requestId, e.outcome]),
      [['m1', 'delivered']],
    );
  });

  it('a message stored while a drain runs is drained by it', async () => {
    await store.store('dev-1', stored('m1'));
    const seen: string[] = [];
    await store.drain('dev-1', async (msg) => {
      seen.push(msg.requestId);
      if (msg.requestId === 'm1') {
        await store.store('dev-1', stored('m2'));
        await store.drain('dev-1', async () => delivered, { waitForLock: false });
      }
      return delivered;
    });
    assert.deepEqual(seen, ['m1', 'm2']);
  });

  it('a lease of a drain that died goes back to the queue in its place', async () => {
    store = makeStore(10, 50);
    for (const id of ['m1', 'm2']) await store.store('dev-1', stored(id));
    // A drain that never finishes (its process "died" mid-delivery).
    void store.drain('dev-1', () => new Promise<DeliverResult>(() => {}));
    const leases = keys.leases(keys.partitionOf('dev-1'));
    let deadline = 0;
    while (deadline === 0) {
      const entry = await redis.zrange(leases, 0, 0, 'WITHSCORES');
      deadline = Number(entry[1] ?? 0);
    }
    assert.equal(await store.sweepExpired(deadline + 1), 0);
    const seen: string[] = [];
    await makeStore(10, 50).drain('dev-1', async (msg) => {
      seen.push(msg.requestId);
      return delivered;
    });
    assert.deepEqual(seen, ['m1', 'm2']);
    assert.equal((await outcomes()).length, 2);
  });

  it('dedupes request ids per origin: another API key reusing an id cannot suppress a message', async () => {
    assert.deepEqual(await store.store('dev-1', stored('same', { origin: 'key-a', payload: 'a' })), {
      stored: true,
      evicted: 0,
    });
    assert.deepEqual(await store.store('dev-1', stored('same', { origin: 'key-b', payload: 'b' })), {
      stored: true,
      evicted: 0,
    });
    assert.deepEqual(await store.store('dev-1', stored('same', { origin: 'key-a', payload: 'again' })), {
      stored: true,
      evicted: 0,
      duplicate: true,
    });
    const seen: unknown[] = [];
    await store.drain('dev-1', async (msg) => {
      seen.push([msg.origin, msg.payload]);
      return delivered;
    });
    assert.deepEqual(seen, [
      ['key-a', 'a'],
      ['key-b', 'b'],
    ]);
    assert.deepEqual(
      (await outcomes()).map((e) => [e.requestId, e.outcome]),
      [
        ['same', 'delivered'],
        ['same', 'delivered'],
      ],
    );
  });

  it('refuses a store past the origin’s message quota, and frees it as messages end', async () => {
    store = new RedisOfflineStore({
      redis,
      keyPrefix: prefix,
      maxPerDevice: 2,
      // The whole bound in one partition: a cluster's partitions each keep their share of it
      // (test/redis-cluster.test.ts).
      partitions: 1,
      quota: { maxMessages: 3, maxBytes: 1_000_000 },
      logger: silentLogger(),
      metrics,
    });
    const mine = (id: string, device: string, extra: Partial<StoredMessage> = {}) =>
      stored(id, { origin: 'key-a', target: { type: 'device', id: device }, ...extra });
    await store.store('made-up-1', mine('m1', 'made-up-1'));
    await store.store('made-up-2', mine('m2', 'made-up-2', { expiresAt: Date.now() + 10 }));
    await store.store('made-up-3', mine('m3', 'made-up-3'));
    assert.deepEqual(await store.store('made-up-4', mine('m4', 'made-up-4')), {
      stored: false,
      evicted: 0,
      refused: 'quota_exceeded',
    });
    assert.equal(await store.pending('made-up-4'), 0);
    // Another key is not held back by this one's quota.
    assert.equal((await store.store('made-up-4', stored('m4', { origin: 'key-b' }))).stored, true);
    assert.deepEqual(await store.usage('key-a'), { messages: 3, bytes: (await store.usage('key-a')).bytes });

    // Expiry, delivery and eviction each give the quota back.
    assert.equal(await store.sweepExpired(Date.now() + 20), 1);
    await store.drain('made-up-1', async () => delivered);
    assert.equal((await store.usage('key-a')).messages, 1);
    await store.store('made-up-3', mine('m5', 'made-up-3'));
    assert.deepEqual(await store.store('made-up-3', mine('m6', 'made-up-3')), { stored: true, evicted: 1 });
    assert.equal((await store.usage('key-a')).messages, 2);
    await store.drain('made-up-3', async () => delivered);
    assert.deepEqual(await store.usage('key-a'), { messages: 0, bytes: 0 });
    assert.match(await metrics.metrics(), /pushline_offline_refused_total\{reason="quota_exceeded"\} 1/);
  });

  it('refuses a store past the origin’s byte quota, counting the stored JSON', async () => {
    const big = (id: string) => stored(id, { origin: 'key-a', payload: 'x'.repeat(200) });
    const small = stored('small', { origin: 'key-a' });
    const size = (m: StoredMessage) => JSON.stringify(StoredMessage.parse(m)).length;
    store = new RedisOfflineStore({
      redis,
      keyPrefix: prefix,
      maxPerDevice: 10,
      partitions: 1,
      // Room for two big messages and a small one, not for a third big one.
      quota: { maxMessages: 1000, maxBytes: 2 * size(big('b1')) + size(small) },
      logger: silentLogger(),
    });
    assert.equal((await store.store('dev-1', big('b1'))).stored, true);
    assert.equal((await store.store('dev-1', big('b2'))).stored, true);
    const { bytes } = await store.usage('key-a');
    assert.equal(bytes, 2 * size(big('b1')));
    assert.equal((await store.store('dev-1', big('b3'))).refused, 'quota_exceeded');
    assert.equal((await store.store('dev-1', small)).stored, true);
  });

  it('keeps every outcome in the outbox until a publish succeeds, then publishes each once', async () => {
    store = makeStore(1);
    await store.store('dev-1', stored('evicted'));
    await store.store('dev-1', stored('kept'));
    await store.store(
      'dev-2',
      stored('old', { expiresAt: Date.now() + 5, target: { type: 'device', id: 'dev-2' } }),
    );
    assert.equal(await store.sweepExpired(Date.now() + 10), 1);
    await store.drain('dev-1', async () => delivered);
    const failing = new OutboxRelay({
      redis,
      keyPrefix: prefix,
      consumer: 'test',
      publish: () => Promise.reject(new Error('Kafka is down')),
      logger: silentLogger(),
    });
    await assert.rejects(failing.flush(), /Kafka is down/);
    await assert.rejects(failing.flush(), /Kafka is down/);
    assert.equal(await outboxLength(), 3);
    assert.deepEqual(
      acrossDevices((await outcomes()).map((e) => [e.requestId, e.deviceId, e.outcome, e.reason ?? ''])),
      acrossDevices([
        ['evicted', 'dev-1', 'expired', 'evicted'],
        ['old', 'dev-2', 'expired', 'ttl_elapsed'],
        ['kept', 'dev-1', 'delivered', ''],
      ]),
    );
    assert.equal(await outboxLength(), 0);
    assert.equal(await relay.flush(), 0, 'nothing is published twice');
  });

  it('a relay whose entries another relay took over acknowledges them without publishing them again', async () => {
    await store.store('dev-1', stored('m1', { expiresAt: Date.now() + 5 }));
    assert.equal(await store.sweepExpired(Date.now() + 10), 1);
    let down = true;
    const byA: DeliveryEvent[] = [];
    const byB: DeliveryEvent[] = [];
    const relay = (consumer: string, into: DeliveryEvent[]) =>
      new OutboxRelay({
        redis,
        keyPrefix: prefix,
        consumer,
        claimIdleMs: 20,
        publish: async (published) => {
          if (down && consumer === 'a') throw new Error('Kafka is down');
          into.push(...published);
        },
        logger: silentLogger(),
      });
    const a = relay('a', byA);
    const b = relay('b', byB);
    await assert.rejects(a.flush(), /Kafka is down/);
    // a holds the entry and stops asking; b takes it over once it has been idle long enough.
    await waitUntil(async () => (await b.flush()) > 0, { what: 'b to take the entry over' });
    down = false;
    assert.equal(await a.flush(), 0);
    assert.deepEqual([byA.length, byB.map((e) => [e.requestId, e.outcome])], [0, [['m1', 'expired']]]);
    const [pendingCount] = (await redis.xpending(keys.outbox(keys.partitionOf('dev-1')), 'relay')) as [
      number,
    ];
    assert.equal(pendingCount, 0);
  });
});
