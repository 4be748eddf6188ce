import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import type { ConnectionEvent } from '@pushline/protocol';
import { RedisDeviceRegistry, type DeviceRecord } from '@pushline/registry';
import { createMetricsRegistry, type Registry } from '@pushline/telemetry';
import { testInfra, uniquePrefix, waitUntil } from '@pushline/testkit';
import { DeviceLocator } from '@pushline/delivery';
import { CountingRegistry, deviceRecord } from './registry-fixtures.ts';

function connected(record: DeviceRecord): ConnectionEvent {
  return {
    v: 1,
    type: 'connected',
    deviceId: record.deviceId,
    userId: record.userId,
    serverId: record.serverId,
    connectionId: record.connectionId,
    at: Date.now(),
  };
}

function disconnected(record: DeviceRecord): ConnectionEvent {
  return { ...connected(record), type: 'disconnected', reason: 'client_disconnect', durationMs: 10 };
}

describe('DeviceLocator', () => {
  let redis: Redis;
  let registry: CountingRegistry;
  let metrics: Registry;
  let locator: DeviceLocator;

  before(() => {
    redis = new Redis(testInfra().redisUrl);
  });
  after(async () => {
    await redis.quit();
  });
  beforeEach(() => {
    registry = new CountingRegistry(
      new RedisDeviceRegistry({ redis, keyPrefix: `${uniquePrefix('locator')}:` }),
    );
    metrics = createMetricsRegistry({}, false);
    locator = new DeviceLocator({ registry, metrics });
  });

  async function lookupsByResult(): Promise<Record<string, number>> {
    const metric = await metrics.getSingleMetric('pushline_locator_lookups_total')?.get();
    return Object.fromEntries((metric?.values ?? []).map((v) => [String(v.labels['result']), v.value]));
  }

  it('reads the registry on a miss and answers from the cache after', async () => {
    const rec = deviceRecord({ deviceId: 'dev-1' });
    await registry.register(rec, 60);
    const first = await locator.lookup('dev-1');
    assert.equal(first.cached, false);
    assert.equal(first.record?.connectionId, rec.connectionId);
    assert.equal(first.record?.serverUrl, rec.serverUrl);
    const second = await locator.lookup('dev-1');
    assert.equal(second.cached, true);
    assert.deepEqual(second.record, first.record);
    assert.equal(registry.lookups, 1);
    assert.deepEqual(
      { hits: locator.stats.hits, misses: locator.stats.misses, size: locator.stats.size },
      { hits: 1, misses: 1, size: 1 },
    );
    assert.deepEqual(await lookupsByResult(), { miss: 1, hit: 1, negative_hit: 0 });
  });

  it('caches "not registered" when asked to (negativeTtlMs), so a flood reads the registry once', async () => {
    metrics = createMetricsRegistry({}, false);
    locator = new DeviceLocator({ registry, metrics, negativeTtlMs: 1000 });
    for (let i = 0; i < 20; i++) assert.equal((await locator.lookup('offline')).record, null);
    assert.equal(registry.lookups, 1);
    assert.equal(locator.stats.negativeHits, 19);
    assert.deepEqual(await lookupsByResult(), { miss: 1, hit: 0, negative_hit: 19 });
  });

  it('lets a negative entry expire after negativeTtlMs', async () => {
    locator = new DeviceLocator({ registry, negativeTtlMs: 50 });
    assert.equal((await locator.lookup('dev-late')).record, null);
    await registry.register(deviceRecord({ deviceId: 'dev-late' }), 60);
    // Nothing announces the expiry; poll until the negative entry is gone.
    const found = await waitUntil(async () => (await locator.lookup('dev-late')).record, {
      what: 'negative entry to expire',
    });
    assert.equal(found.deviceId, 'dev-late');
  });

  it('lets a record expire after ttlMs', async () => {
    locator = new DeviceLocator({ registry, ttlMs: 30 });
    await registry.register(deviceRecord({ deviceId: 'dev-1' }), 60);
    await locator.lookup('dev-1');
    await waitUntil(async () => !(await locator.lookup('dev-1')).cached, { what: 'record to expire' });
    assert.ok(registry.lookups >= 2);
  });

  it('shares one registry read among concurrent lookups of a device', async () => {
    await registry.register(deviceRecord({ deviceId: 'dev-1' }), 60);
    const results = await Promise.all(Array.from({ length: 25 }, () => locator.lookup('dev-1')));
    assert.equal(registry.lookups, 1);
    assert.equal(locator.stats.registryReads, 1);
    assert.ok(results.every((r) => !r.cached && r.record?.deviceId === 'dev-1'));
    assert.equal((await locator.lookup('dev-1')).cached, true);
  });

  it('does not cache a read that was in flight when the entry was invalidated', async () => {
    await registry.register(deviceRecord({ deviceId: 'dev-1' }), 60);
    const inFlight = locator.lookup('dev-1');
    locator.invalidate('dev-1');
    const joined = locator.lookup('dev-1'); // starts a new read instead of joining the old one
    await Promise.all([inFlight, joined]);
    assert.equal(registry.lookups, 2);
    assert.equal((await locator.lookup('dev-1')).cached, true);
  });

  it('passes registry errors to every waiter and caches nothing', async () => {
    registry.failLookups = true;
    const results = await Promise.allSettled([locator.lookup('dev-1'), locator.lookup('dev-1')]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['rejected', 'rejected'],
    );
    assert.equal(registry.lookups, 1);
    assert.equal(locator.stats.size, 0);
  });

  it('invalidate with a connection id drops the entry only if it is that connection', async () => {
    const rec = deviceRecord({ deviceId: 'dev-1' });
    await registry.register(rec, 60);
    await locator.lookup('dev-1');
    locator.invalidate('dev-1', 'some-older-connection');
    assert.equal((await locator.lookup('dev-1')).cached, true);
    locator.invalidate('dev-1', rec.connectionId);
    assert.equal((await locator.lookup('dev-1')).cached, false);
    locator.invalidate('dev-1');
    assert.equal((await locator.lookup('dev-1')).cached, false);
  });

  it('keeps no negative entry by default: the router confirms every negative answer anyway', async () => {
    assert.equal((await locator.lookup('dev-new')).record, null);
    await registry.register(deviceRecord({ deviceId: 'dev-new' }), 60);
    const found = await locator.lookup('dev-new');
    assert.deepEqual(
      { cached: found.cached, deviceId: found.record?.deviceId },
      { cached: false, deviceId: 'dev-new' },
    );
  });

  it('applyConnectionEvent: connected ends a negative entry and replaces a moved record', async () => {
    locator = new DeviceLocator({ registry, negativeTtlMs: 60_000 });
    assert.equal((await locator.lookup('dev-1')).record, null);
    const onA = deviceRecord({ deviceId: 'dev-1', serverId: 'srv-a', connectionId: 'c-a' });
    await registry.register(onA, 60);
    locator.applyConnectionEvent(connected(onA));
    assert.equal((await locator.lookup('dev-1')).record?.serverId, 'srv-a');

    const onB = deviceRecord({ deviceId: 'dev-1', serverId: 'srv-b', connectionId: 'c-b' });
    await registry.register(onB, 60);
    locator.applyConnectionEvent(connected(onB));
    const after = await locator.lookup('dev-1');
    assert.deepEqual(
      { cached: after.cached, serverId: after.record?.serverId },
      { cached: false, serverId: 'srv-b' },
    );
  });

  it('applyConnectionEvent: disconnected drops the entry only for the cached connection', async () => {
    const onA = deviceRecord({ deviceId: 'dev-1', serverId: 'srv-a', connectionId: 'c-a' });
    const onB = deviceRecord({ deviceId: 'dev-1', serverId: 'srv-b', connectionId: 'c-b' });
    await registry.register(onB, 60);
    await locator.lookup('dev-1');
    // The old connection's disconnect arrives after the device reconnected elsewhere.
    locator.applyConnectionEvent(disconnected(onA));
    assert.equal((await locator.lookup('dev-1')).cached, true);
    locator.applyConnectionEvent(disconnected(onB));
    assert.equal((await locator.lookup('dev-1')).cached, false);
  });

  it('drops the least recently used entry beyond maxEntries', async () => {
    locator = new DeviceLocator({ registry, maxEntries: 2 });
    for (const id of ['a', 'b', 'c']) await registry.register(deviceRecord({ deviceId: id }), 60);
    await locator.lookup('a');
    await locator.lookup('b');
    await locator.lookup('a'); // a is now the most recently used
    await locator.lookup('c'); // evicts b
    assert.equal(locator.stats.size, 2);
    assert.equal((await locator.lookup('a')).cached, true);
    assert.equal((await locator.lookup('b')).cached, false);
  });
});
