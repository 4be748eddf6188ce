import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { keysMatching, testRedis, uniquePrefix, waitUntil } from '@pushline/testkit';
import {
  RedisDeviceRegistry,
  registryKeys,
  type DeviceRecord,
  type RedisClient,
  type ServerLoad,
} from '@pushline/registry';

function record(overrides: Partial<DeviceRecord> = {}): DeviceRecord {
  return {
    deviceId: 'dev-1',
    userId: 'user-1',
    serverId: 'srv-a',
    serverUrl: 'http://127.0.0.1:7071',
    connectionId: 'conn-a',
    connectedAt: 1_700_000_000_000,
    lastSeen: 1_700_000_000_000,
    ...overrides,
  };
}

function load(overrides: Partial<ServerLoad> = {}): ServerLoad {
  return {
    serverId: 'srv-a',
    serverUrl: 'http://127.0.0.1:7071',
    deviceUrl: 'http://127.0.0.1:7070',
    directUrl: 'http://127.0.0.1:7072',
    connections: 3,
    eventLoopDelayMs: 1.5,
    rssBytes: 1000,
    heapUsedBytes: 500,
    draining: false,
    at: Date.now(),
    ...overrides,
  };
}

describe('RedisDeviceRegistry', () => {
  let redis: RedisClient;
  let prefix: string;
  let k: ReturnType<typeof registryKeys>;
  let registry: RedisDeviceRegistry;

  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await redis.quit();
  });
  beforeEach(() => {
    prefix = `${uniquePrefix('registry')}:`;
    k = registryKeys(prefix);
    registry = new RedisDeviceRegistry({ redis, keyPrefix: prefix });
  });

  it('registers a device and looks it up, returning the record it replaced', async () => {
    assert.equal(await registry.register(record(), 60), null);
    assert.deepEqual(await registry.lookup('dev-1'), { ...record(), tenantId: undefined });

    const moved = record({ serverId: 'srv-b', connectionId: 'conn-b', tenantId: 'ten-1' });
    const prev = await registry.register(moved, 60);
    assert.equal(prev?.connectionId, 'conn-a');
    assert.equal(prev?.serverId, 'srv-a');
    assert.deepEqual(await registry.lookup('dev-1'), moved);
    assert.ok((await redis.ttl(k.device('dev-1'))) > 50);
  });

  it('compare-and-delete: unregister removes only the connection that owns the entry', async () => {
    await registry.register(record(), 60);
    assert.equal(await registry.unregister('dev-1', 'conn-other'), false);
    assert.notEqual(await registry.lookup('dev-1'), null);

    assert.equal(await registry.unregister('dev-1', 'conn-a'), true);
    assert.equal(await registry.lookup('dev-1'), null);
    // The user's set keeps the member until a read prunes it: removing it here could race a
    // register of the same device elsewhere (the index sets are on other slots than the entry).
    assert.deepEqual(await registry.userDevices('user-1'), []);
    assert.equal(await redis.sismember(k.user('user-1'), 'dev-1'), 0, 'pruned by the read');
    assert.equal(await redis.sismember(k.server('srv-a'), 'dev-1'), 0);
    assert.equal(await registry.unregister('dev-1', 'conn-a'), false);
  });

  it('keeps B’s entry when A processes its disconnect after the device reconnected to B', async () => {
    await registry.register(record(), 60);
    await registry.register(record({ serverId: 'srv-b', connectionId: 'conn-b' }), 60);
    assert.equal(await registry.unregister('dev-1', 'conn-a'), false);
    const current = await registry.lookup('dev-1');
    assert.equal(current?.serverId, 'srv-b');
    assert.equal(current?.connectionId, 'conn-b');
    // A restarting after a crash must not clear B's entry either.
    assert.equal(await registry.clearServer('srv-a'), 0);
    assert.equal((await registry.lookup('dev-1'))?.connectionId, 'conn-b');
    assert.deepEqual(
      (await registry.userDevices('user-1')).map((r) => r.connectionId),
      ['conn-b'],
    );
  });

  it('lookupMany answers in order with null for unknown devices', async () => {
    await registry.register(record({ deviceId: 'd1' }), 60);
    await registry.register(record({ deviceId: 'd3', connectionId: 'c3' }), 60);
    const found = await registry.lookupMany(['d1', 'd2', 'd3']);
    assert.deepEqual(
      found.map((r) => r?.deviceId ?? null),
      ['d1', null, 'd3'],
    );
    assert.deepEqual(await registry.lookupMany([]), []);
  });

  it('userDevices lists live devices and prunes members whose record is gone or changed user', async () => {
    await registry.register(record({ deviceId: 'd1', connectionId: 'c1' }), 60);
    await registry.register(record({ deviceId: 'd2', connectionId: 'c2' }), 60);
    await registry.register(record({ deviceId: 'd3', connectionId: 'c3' }), 60);
    await redis.del(k.device('d2')); // as if its TTL ran out
    await registry.register(record({ deviceId: 'd3', connectionId: 'c3b', userId: 'user-2' }), 60);

    const devices = await registry.userDevices('user-1');
    assert.deepEqual(devices.map((r) => r.deviceId).sort(), ['d1']);
    assert.deepEqual(await redis.smembers(k.user('user-1')), ['d1']);
    assert.deepEqual(
      (await registry.userDevices('user-2')).map((r) => r.deviceId),
      ['d3'],
    );
  });

  it('entries expire by TTL', async () => {
    await registry.register(record(), 1);
    await waitUntil(async () => (await registry.lookup('dev-1')) === null, {
      timeoutMs: 5_000,
      what: 'entry to expire',
    });
  });

  it('refresh extends only entries still owned by the given connection, and their index sets', async () => {
    await registry.register(record({ deviceId: 'd1', connectionId: 'c1' }), 10);
    await registry.register(record({ deviceId: 'd2', connectionId: 'c2' }), 10);
    const refreshed = await registry.refresh(
      [
        { deviceId: 'd1', connectionId: 'c1', userId: 'user-1', serverId: 'srv-a' },
        { deviceId: 'd2', connectionId: 'stale' },
        { deviceId: 'missing', connectionId: 'x' },
      ],
      600,
    );
    assert.equal(refreshed, 1);
    assert.ok((await redis.ttl(k.device('d1'))) > 500);
    assert.ok((await redis.ttl(k.device('d2'))) <= 10);
    assert.ok((await redis.ttl(k.user('user-1'))) > 500);
    assert.ok((await redis.ttl(k.server('srv-a'))) > 500);
    const d1 = await registry.lookup('d1');
    assert.ok(d1 && d1.lastSeen > d1.connectedAt);
    assert.equal(await registry.refresh([], 600), 0);

    // A later, shorter registration never shortens an index set other records rely on.
    await registry.register(record({ deviceId: 'd3', connectionId: 'c3' }), 5);
    assert.ok((await redis.ttl(k.user('user-1'))) > 500);
  });

  it('clearServer removes what the server still owns and leaves devices that moved away', async () => {
    for (let i = 0; i < 1200; i++) {
      await registry.register(record({ deviceId: `d${i}`, connectionId: `c${i}`, userId: `u${i % 7}` }), 60);
    }
    await registry.register(
      record({ deviceId: 'd5', connectionId: 'moved', serverId: 'srv-b', userId: 'u5' }),
      60,
    );
    await registry.register(record({ deviceId: 'other', connectionId: 'co', serverId: 'srv-b' }), 60);

    assert.equal(await registry.clearServer('srv-a'), 1199);
    assert.equal(await registry.lookup('d0'), null);
    assert.equal((await registry.lookup('d5'))?.serverId, 'srv-b');
    assert.equal((await registry.lookup('other'))?.serverId, 'srv-b');
    assert.equal(await redis.exists(k.server('srv-a')), 0);
    assert.deepEqual(
      (await registry.userDevices('u5')).map((r) => r.deviceId),
      ['d5'],
    );
    assert.equal(await registry.clearServer('srv-a'), 0);
  });

  it('reports load, lists live servers and forgets expired or removed ones', async () => {
    await registry.reportLoad(load(), 60);
    await registry.reportLoad(load({ serverId: 'srv-b', draining: true }), 1);
    const live = await registry.liveServers();
    assert.deepEqual(live.map((l) => l.serverId).sort(), ['srv-a', 'srv-b']);
    assert.equal(live.find((l) => l.serverId === 'srv-b')?.draining, true);

    await waitUntil(async () => (await registry.liveServers()).length === 1, {
      timeoutMs: 5_000,
      what: 'srv-b load report to expire',
    });
    assert.deepEqual(await redis.smembers(k.servers), ['srv-a']);

    await registry.removeLoad('srv-a');
    assert.deepEqual(await registry.liveServers(), []);
  });

  it('restore writes back missing entries and their sets, keeps entries it owns, and never takes a moved device', async () => {
    const kept = record({ deviceId: 'kept', connectionId: 'conn-kept' });
    const lost = record({ deviceId: 'lost', connectionId: 'conn-lost', tenantId: 'ten-1' });
    const moved = record({ deviceId: 'moved', connectionId: 'conn-old' });
    await registry.register(kept, 60);
    await registry.register({ ...moved, serverId: 'srv-b', connectionId: 'conn-new' }, 60);

    assert.equal(await registry.restore([kept, lost, moved], 120), 1, 'only the missing entry is written');

    assert.deepEqual(await registry.lookup('lost'), lost);
    assert.equal(
      (await registry.lookup('moved'))?.connectionId,
      'conn-new',
      'the newer connection keeps its entry',
    );
    const keptTtl = await redis.ttl(k.device('kept'));
    assert.ok(keptTtl > 0 && keptTtl <= 60, `an entry still there keeps its own TTL (${keptTtl})`);
    assert.ok((await redis.ttl(k.device('lost'))) > 60, 'a restored entry gets the TTL given');
    assert.deepEqual((await registry.userDevices('user-1')).map((r) => r.deviceId).sort(), [
      'kept',
      'lost',
      'moved',
    ]);
    assert.ok(await redis.sismember(k.server('srv-a'), 'lost'));
    assert.equal(await registry.restore([], 120), 0);
  });

  it('a server mark tells whether Redis still holds the server’s entries, and clearServer removes it', async () => {
    assert.equal(await registry.checkServerMark('srv-a', 60), false, 'never marked');
    await registry.markServer('srv-a', 60);
    assert.equal(await registry.checkServerMark('srv-a', 60), true);
    for (const mark of await keysMatching(redis, `${prefix}mark:*`)) await redis.del(mark);
    assert.equal(
      await registry.checkServerMark('srv-a', 60),
      false,
      'lost, as in a restart without persistence',
    );
    await registry.markServer('srv-a', 60);
    await registry.clearServer('srv-a');
    assert.equal(await registry.checkServerMark('srv-a', 60), false);
  });
});
