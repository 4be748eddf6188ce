import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { offlineKeys, offlinePartitions } from '@pushline/offline-store';
import { ReconnectHint } from '@pushline/protocol';
import { isCluster, registryKeys } from '@pushline/registry';
import { deleteKeys, keysMatching, waitUntil } from '@pushline/testkit';
import type { Redis } from 'ioredis';
import { createWorld, disconnected, metricValue, nextEvent, type TestWorld } from './helpers.ts';

describe('registry entries of device connections', () => {
  let world: TestWorld;
  beforeEach(async () => {
    world = await createWorld('registry');
  });
  afterEach(async () => {
    await world.close();
  });

  it('appear on connect and disappear on disconnect', async () => {
    const { server, metrics } = await world.startServer();
    const device = await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1', uid: 'u-1' }));
    const record = await waitUntil(() => world.registry.lookup('dev-1'), { what: 'registry entry' });
    assert.equal(record.serverId, server.serverId);
    assert.deepEqual(
      (await world.registry.userDevices('u-1')).map((r) => r.deviceId),
      ['dev-1'],
    );

    device.disconnect();
    await waitUntil(async () => (await world.registry.lookup('dev-1')) === null, { what: 'entry removed' });
    assert.deepEqual(await world.registry.userDevices('u-1'), []);
    await waitUntil(() => server.connectionCount === 0, { what: 'connection gone' });
    assert.equal(
      await metricValue(metrics, 'pushline_disconnects_total', { reason: 'client_disconnect' }),
      1,
    );
    assert.equal(
      await metricValue(metrics, 'pushline_registry_ops_total', { op: 'unregister', result: 'ok' }),
      1,
    );
  });

  it('a connect with nothing stored for the device costs two Redis commands: its registration and the inbox check', async (t) => {
    if (isCluster(world.redis)) {
      // MONITOR shows one node; on a cluster a connect costs four commands, the index sets'
      // writes on their own slots (docs/decisions/0022-redis-cluster.md).
      t.skip('one Redis only');
      return;
    }
    const { server } = await world.startServer();
    const monitor = await (world.redis as Redis).monitor();
    const seen: string[][] = [];
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      // Commands a script runs inside Redis are part of that script's one round trip.
      if (source !== 'lua' && args.some((a) => a.includes('dev-1'))) seen.push(args);
    });
    try {
      await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1', uid: 'u-1' }));
      // The inbox check comes after the registration: once it is seen, the connect is done.
      const inbox = offlineKeys(`${world.prefix}:`, offlinePartitions(world.redis, undefined)).queue('dev-1');
      await waitUntil(() => seen.some((args) => args.includes(inbox)), {
        what: 'the inbox check',
      });
      const mark = `${world.prefix}:mark:dev-1`;
      await world.redis.exists(mark);
      await waitUntil(() => seen.some((args) => args.includes(mark)), { what: 'MONITOR to catch up' });
      const commands = seen.slice(
        0,
        seen.findIndex((args) => args.includes(mark)),
      );
      assert.equal(commands.length, 2, JSON.stringify(commands));
      assert.ok(
        commands[0]?.includes(registryKeys(`${world.prefix}:`).device('dev-1')),
        'the registration first',
      );
    } finally {
      monitor.disconnect();
    }
  });

  it('A→B reconnect race: A processing the old disconnect keeps B’s entry', async () => {
    const a = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-a' } });
    const b = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-b' } });
    const token = await world.token({ sub: 'dev-1' });

    const onA = await world.connect(a.server.deviceUrl, token);
    await waitUntil(async () => (await world.registry.lookup('dev-1'))?.serverId === 'srv-a', {
      what: 'entry at A',
    });
    // The device comes back through B before A noticed that the old connection is gone.
    await world.connect(b.server.deviceUrl, token);
    await waitUntil(async () => (await world.registry.lookup('dev-1'))?.serverId === 'srv-b', {
      what: 'entry at B',
    });
    const atB = await world.registry.lookup('dev-1');

    onA.disconnect();
    await waitUntil(
      async () => (await metricValue(a.metrics, 'pushline_registry_ops_total', { op: 'unregister' })) === 1,
      { what: 'A to process the disconnect' },
    );
    assert.deepEqual(await world.registry.lookup('dev-1'), atB);
    assert.equal(b.server.connectionCount, 1);
  });

  it('a device reconnecting through another server closes its old connection there with `replaced`', async () => {
    const a = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-a' } });
    const b = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-b' } });
    const token = await world.token({ sub: 'dev-1' });
    const onA = await world.connect(a.server.deviceUrl, token);
    await waitUntil(async () => (await world.registry.lookup('dev-1'))?.serverId === 'srv-a', {
      what: 'entry at A',
    });
    const hint = nextEvent<unknown>(onA, 'reconnect_hint');
    const closed = disconnected(onA);

    await world.connect(b.server.deviceUrl, token);
    assert.deepEqual(ReconnectHint.parse(await hint), { reason: 'replaced', afterMs: 0 });
    assert.equal(await closed, 'io server disconnect');
    await waitUntil(() => a.server.connectionCount === 0, { what: 'A to drop the old connection' });
    assert.equal((await world.registry.lookup('dev-1'))?.serverId, 'srv-b');
    assert.equal(await metricValue(a.metrics, 'pushline_disconnects_total', { reason: 'replaced' }), 1);
  });

  it('close() works before start() and more than once', async () => {
    const { createConnectionServer } = await import('@pushline/connection-server');
    const { connectionServerEnv, parseEnv } = await import('@pushline/config');
    const { createMetricsRegistry, silentLogger, trace } = await import('@pushline/telemetry');
    const server = createConnectionServer({
      config: parseEnv(connectionServerEnv, world.env()),
      serverId: 'never-started',
      redis: world.redis,
      registry: world.registry,
      kafka: world.kafka,
      logger: silentLogger(),
      metrics: createMetricsRegistry({}, false),
      tracer: trace.getTracer('test'),
    });
    await server.close();
    await server.close();
    assert.equal(server.connectionCount, 0);
  });

  it('a second connection of the same device to the same server wins; the older gets `replaced`', async () => {
    const { server, metrics } = await world.startServer();
    const token = await world.token({ sub: 'dev-1' });
    const older = await world.connect(server.deviceUrl, token);
    const first = await waitUntil(() => world.registry.lookup('dev-1'), { what: 'first entry' });
    const hint = nextEvent<unknown>(older, 'reconnect_hint');
    const olderClosed = disconnected(older);

    const newer = await world.connect(server.deviceUrl, token);
    assert.deepEqual(ReconnectHint.parse(await hint), { reason: 'replaced', afterMs: 0 });
    assert.equal(await olderClosed, 'io server disconnect');
    assert.ok(newer.connected);

    await waitUntil(
      async () => (await metricValue(metrics, 'pushline_disconnects_total', { reason: 'replaced' })) === 1,
      {
        what: 'replaced disconnect',
      },
    );
    await waitUntil(
      async () => (await metricValue(metrics, 'pushline_registry_ops_total', { op: 'unregister' })) === 1,
      { what: 'older connection unregistered' },
    );
    const current = await world.registry.lookup('dev-1');
    assert.ok(current);
    assert.notEqual(current.connectionId, first.connectionId);
    assert.equal(server.connectionCount, 1);
  });

  it('clears its stale entries at start when restarted with the same server id', async () => {
    await world.registry.register(
      {
        deviceId: 'ghost',
        userId: 'u-1',
        serverId: 'srv-same',
        serverUrl: 'http://127.0.0.1:1',
        connectionId: 'old',
        connectedAt: 1,
        lastSeen: 1,
      },
      600,
    );
    const { metrics } = await world.startServer({ env: { PUSHLINE_SERVER_ID: 'srv-same' } });
    assert.equal(await world.registry.lookup('ghost'), null);
    assert.equal(
      await metricValue(metrics, 'pushline_registry_ops_total', { op: 'clear_server', result: 'ok' }),
      1,
    );
  });

  it('reports its load to the registry and removes it on close', async () => {
    const { server } = await world.startServer({ env: { PUSHLINE_LOAD_REPORT_MS: '100' } });
    await world.connect(server.deviceUrl, await world.token({ sub: 'dev-1' }));
    const load = await waitUntil(
      async () =>
        (await world.registry.liveServers()).find(
          (l) => l.serverId === server.serverId && l.connections === 1,
        ),
      { what: 'load report with one connection' },
    );
    assert.equal(load.serverUrl, server.internalUrl);
    assert.equal(load.deviceUrl, server.deviceUrl);
    assert.equal(load.draining, false);
    assert.ok(load.rssBytes > 0 && load.heapUsedBytes > 0 && load.eventLoopDelayMs >= 0);
    // The console shows these: the one device has authenticated, so no handshake is pending.
    assert.equal(load.pendingHandshakes, 0);
    assert.ok(typeof load.cpuPercent === 'number' && load.cpuPercent >= 0, `cpuPercent ${load.cpuPercent}`);

    await server.close();
    assert.deepEqual(await world.registry.liveServers(), []);
    assert.equal(await world.registry.lookup('dev-1'), null);
  });

  it('puts the entries of its live connections back when Redis lost them without a reconnect (a flush)', async () => {
    const { server, metrics } = await world.startServer();
    const devices = ['dev-1', 'dev-2', 'dev-3'];
    for (const id of devices)
      await world.connect(server.deviceUrl, await world.token({ sub: id, uid: 'u-1' }));
    await waitUntil(async () => (await world.registry.lookupMany(devices)).every((r) => r !== null), {
      what: 'all registered',
    });

    // Everything this world wrote, gone at once, as FLUSHALL would do (the suite's Redis is shared).
    const keys = await keysMatching(world.redis, `${world.prefix}:*`);
    assert.ok(
      keys.some((k) => k.startsWith(`${world.prefix}:mark:`) && k.endsWith(`:${server.serverId}`)),
      `the server keeps a mark: ${keys.join(' ')}`,
    );
    await deleteKeys(world.redis, keys);

    await waitUntil(
      async () => (await world.registry.lookupMany(devices)).every((r) => r?.serverId === server.serverId),
      {
        what: 'the periodic mark check to notice and restore',
      },
    );
    assert.deepEqual((await world.registry.userDevices('u-1')).map((r) => r.deviceId).sort(), devices);
    assert.equal(await metricValue(metrics, 'pushline_registry_restored_total'), devices.length);
    assert.equal(server.connectionCount, devices.length, 'no device was disconnected');
    assert.ok(await world.registry.checkServerMark(server.serverId, 60), 'the mark is back');
  });
});
