import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DeviceLocator } from '@pushline/delivery';
import type { KafkaClient, Producer } from '@pushline/kafka';
import type { ConnectionEvent } from '@pushline/protocol';
import { RedisDeviceRegistry, type RedisClient } from '@pushline/registry';
import { createMetricsRegistry, silentLogger, type Counter } from '@pushline/telemetry';
import { testKafkaClient, testRedis, uniquePrefix, waitUntil } from '@pushline/testkit';
import { CacheInvalidator } from '../src/cache-invalidation.ts';
import { createProcessorMetrics, type ProcessorMetrics } from '../src/metrics.ts';

async function counted(counter: Counter, type: string): Promise<number> {
  const { values } = await counter.get();
  return values.find((v) => v.labels.type === type)?.value ?? 0;
}

describe('CacheInvalidator (real Kafka and Redis)', () => {
  let kafka: KafkaClient;
  let producer: Producer;
  let redis: RedisClient;
  let registry: RedisDeviceRegistry;
  let locator: DeviceLocator;
  let metrics: ProcessorMetrics;
  let invalidator: CacheInvalidator;
  let topic: string;

  before(async () => {
    const prefix = uniquePrefix('cache-invalidation');
    topic = `${prefix}.connection-events`;
    kafka = testKafkaClient('cache-invalidation-test');
    const admin = kafka.admin();
    // One partition: once a probe event arrives, every later event does.
    await admin.ensureTopics([{ name: topic, partitions: 1 }]);
    await admin.close();
    producer = kafka.producer();
    await producer.start();
    redis = testRedis();
    registry = new RedisDeviceRegistry({ redis, keyPrefix: `${prefix}:` });
    locator = new DeviceLocator({ registry });
    metrics = createProcessorMetrics(createMetricsRegistry({ service: 'cache-invalidation-test' }, false), {
      inFlight: () => 0,
      lag: () => 0,
      dependencies: () => ({ redis: true, kafka: true, registry: true }),
      partitions: () => [],
    });
    invalidator = new CacheInvalidator({
      kafka,
      topic,
      groupId: `${prefix}-invalidator`,
      locator,
      metrics,
      logger: silentLogger(),
    });
    assert.equal(invalidator.joined, false);
    await invalidator.start();
    // It reads from the latest offset: only events sent after it joined reach it.
    await waitUntil(() => invalidator.joined, {
      what: 'the invalidator joined its group',
      timeoutMs: 60_000,
    });
    // Joined is not yet fetching: its starting offset ("latest") may be taken after a send. Probe
    // events go out until one is applied; from then on nothing sent is missed.
    await waitUntil(
      async () => {
        if ((await counted(metrics.invalidations, 'connected')) > 0) return true;
        await send('probe', JSON.stringify(connectionEvent('connected', 'probe', 'conn-probe')));
        return false;
      },
      { what: 'a probe event applied', timeoutMs: 60_000, intervalMs: 200 },
    );
  });

  after(async () => {
    await invalidator.close();
    await producer.close();
    await redis.quit();
  });

  async function connect(deviceId: string, connectionId: string): Promise<void> {
    await registry.register(
      {
        deviceId,
        userId: 'u-1',
        serverId: 'srv-a',
        serverUrl: 'http://127.0.0.1:1',
        connectionId,
        connectedAt: Date.now(),
        lastSeen: Date.now(),
      },
      60,
    );
  }

  /** Looks the device up until the locator holds it, so the next lookup is answered from the cache. */
  async function cached(deviceId: string): Promise<void> {
    await locator.lookup(deviceId);
    assert.equal((await locator.lookup(deviceId)).cached, true, `${deviceId} cached`);
  }

  function connectionEvent(
    type: 'connected' | 'disconnected',
    deviceId: string,
    connectionId: string,
  ): ConnectionEvent {
    const base = { v: 1 as const, deviceId, userId: 'u-1', serverId: 'srv-a', connectionId, at: Date.now() };
    return type === 'connected'
      ? { ...base, type }
      : { ...base, type, reason: 'client_disconnect', durationMs: 10 };
  }

  async function send(deviceId: string, value: string): Promise<void> {
    await producer.send(topic, [{ key: deviceId, value }]);
  }

  it('drops a cached device when its connection ends, so the next lookup reads the registry', async () => {
    await connect('dev-gone', 'conn-1');
    await cached('dev-gone');
    const before = await counted(metrics.invalidations, 'disconnected');
    await send('dev-gone', JSON.stringify(connectionEvent('disconnected', 'dev-gone', 'conn-1')));
    await waitUntil(async () => (await counted(metrics.invalidations, 'disconnected')) > before, {
      what: 'the disconnect applied',
    });
    assert.equal((await locator.lookup('dev-gone')).cached, false);
  });

  it('drops a cached device when it connects again (to any server)', async () => {
    await connect('dev-moved', 'conn-1');
    await cached('dev-moved');
    const before = await counted(metrics.invalidations, 'connected');
    await connect('dev-moved', 'conn-2');
    await send('dev-moved', JSON.stringify(connectionEvent('connected', 'dev-moved', 'conn-2')));
    await waitUntil(async () => (await counted(metrics.invalidations, 'connected')) > before, {
      what: 'the connect applied',
    });
    const fresh = await locator.lookup('dev-moved');
    assert.equal(fresh.cached, false);
    assert.equal(fresh.record?.connectionId, 'conn-2');
  });

  it("keeps a device's newer connection cached when an older one of it ends", async () => {
    await connect('dev-kept', 'conn-new');
    await cached('dev-kept');
    const before = await counted(metrics.invalidations, 'disconnected');
    await send('dev-kept', JSON.stringify(connectionEvent('disconnected', 'dev-kept', 'conn-old')));
    await waitUntil(async () => (await counted(metrics.invalidations, 'disconnected')) > before, {
      what: 'the disconnect applied',
    });
    const found = await locator.lookup('dev-kept');
    assert.equal(found.cached, true);
    assert.equal(found.record?.connectionId, 'conn-new');
  });

  it('counts and skips unreadable events, and applies the good ones after them', async () => {
    await connect('dev-after-bad', 'conn-1');
    await cached('dev-after-bad');
    const invalidBefore = await counted(metrics.invalidations, 'invalid');
    const failuresBefore = (await metrics.loopFailures.get()).values.find(
      (v) => v.labels.loop === 'cache_invalidation',
    )?.value;
    const bad = [
      'not json',
      JSON.stringify({ v: 1, type: 'teleported', deviceId: 'dev-after-bad' }),
      JSON.stringify({ ...connectionEvent('disconnected', 'dev-after-bad', 'conn-1'), v: 2 }),
      'null',
    ];
    // One partition: the good event comes after the bad ones.
    await producer.send(topic, [
      ...bad.map((value) => ({ key: 'dev-after-bad', value })),
      { key: 'dev-after-bad', value: null },
      {
        key: 'dev-after-bad',
        value: JSON.stringify(connectionEvent('disconnected', 'dev-after-bad', 'conn-1')),
      },
    ]);
    await waitUntil(async () => (await locator.lookup('dev-after-bad')).cached === false, {
      what: 'the good event applied after the bad ones',
    });
    assert.equal(await counted(metrics.invalidations, 'invalid'), invalidBefore + bad.length + 1);
    const failuresAfter = (await metrics.loopFailures.get()).values.find(
      (v) => v.labels.loop === 'cache_invalidation',
    )?.value;
    assert.equal((failuresAfter ?? 0) - (failuresBefore ?? 0), bad.length + 1);
  });
});
