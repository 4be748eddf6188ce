import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { startRedis, type RedisInstance } from '@pushline/devstack';
import { DeliveryEvent, DeviceEvents } from '@pushline/protocol';
import { collectRecords, recordJson, waitUntil } from '@pushline/testkit';
import { startOwnRedisPlatform, type OwnRedisPlatform } from './support/own-redis-platform.ts';

/**
 * Redis restarted without persistence (as devstack and compose ran it) forgets every registry
 * entry while the devices stay connected to their servers. Each server notices (its mark key is
 * gone) and writes the entries of its live connections again, so presence, direct pushes and
 * cross-server topic broadcasts work again without any device reconnecting. The test owns its
 * redis-server and kills it for real.
 */

let redis: RedisInstance | undefined;
let platform: OwnRedisPlatform | undefined;

afterEach(async () => {
  await platform?.close();
  platform = undefined;
  await redis?.stop();
  redis = undefined;
});
after(async () => {
  await redis?.stop();
});

const DEVICES_PER_SERVER = 4;

describe('a Redis restart', () => {
  it('without persistence loses the registry, and the servers put every live connection back without a reconnect', async () => {
    redis = await startRedis({ persistence: 'none' });
    platform = await startOwnRedisPlatform('redis-restart', redis.url, { servers: 2 });
    const [serverA, serverB] = platform.servers;
    assert.ok(serverA && serverB);
    const ids: string[] = [];
    const devices = [];
    for (const [s, server] of [serverA, serverB].entries()) {
      for (let i = 0; i < DEVICES_PER_SERVER; i++) {
        const id = `d${s}-${i}`;
        ids.push(id);
        devices.push(await platform.connect(server, id, { topics: ['news'] }));
      }
    }
    // A subscriber on B only: a broadcast started on A reaches it through the adapter's channels.
    const listener = devices.at(-1);
    assert.ok(listener);
    assert.deepEqual(await listener.request(DeviceEvents.subscribe, { topic: 'news' }), {
      ok: true,
      topic: 'news',
    });
    const disconnects: string[] = [];
    for (const d of devices) d.socket.on('disconnect', () => disconnects.push(d.id));

    await platform.registry.markServer('sentinel', 600);
    await redis.restart({ kill: true });
    const sentinelKept = await waitUntil(
      () =>
        platform?.registry.checkServerMark('sentinel', 600).then(
          (kept) => ({ kept }),
          () => undefined,
        ),
      { what: 'Redis to answer again' },
    );
    assert.equal(sentinelKept.kept, false, 'the restart lost what Redis held');

    await waitUntil(
      async () => {
        const records = await platform?.registry.lookupMany(ids).catch(() => []);
        return records?.length === ids.length && records.every((r) => r !== null);
      },
      { timeoutMs: 15_000, what: 'every live connection to be registered again' },
    );
    const records = await platform.registry.lookupMany(ids);
    assert.deepEqual(
      records.map((r) => r?.serverId),
      ids.map((id) => (id.startsWith('d0-') ? serverA.serverId : serverB.serverId)),
    );
    assert.deepEqual(disconnects, [], 'no device had to reconnect');

    const presence = await platform.call('GET', `/v1/devices/${ids[0]}/presence`);
    assert.equal((presence.body as { online?: boolean }).online, true);
    const servers = await waitUntil(
      async () => {
        const live = await platform?.registry.liveServers();
        return live?.length === 2 ? live : undefined;
      },
      { what: 'both load reports to be back' },
    );
    assert.deepEqual(servers.map((s) => s.serverId).sort(), [serverA.serverId, serverB.serverId].sort());

    const push = await platform.call('POST', `/v1/devices/${ids.at(-2)}/messages`, { payload: { after: 1 } });
    assert.equal(push.status, 200, JSON.stringify(push.body));
    assert.equal((push.body as { outcome?: string }).outcome, 'delivered');

    // The adapter's subscriber reconnected and re-subscribed its room channels by itself.
    const result = await serverA.server.broadcast({
      messageId: 'news-after-restart',
      topic: 'news',
      payload: { headline: 'still here' },
      timeoutMs: 5_000,
    });
    assert.equal(result.delivered, 1);
    assert.ok(listener.received.some((m) => m.id === 'news-after-restart'));
  });

  it('while the servers write their entries back, routers wait instead of answering not_connected', async () => {
    redis = await startRedis({ persistence: 'none' });
    // One entry per second: the restore of four devices per server lasts about three seconds,
    // long enough for every push below to arrive while it runs.
    platform = await startOwnRedisPlatform('redis-restoring', redis.url, {
      servers: 2,
      processor: true,
      env: { PUSHLINE_REGISTRY_RESTORE_RATE_PER_S: '1' },
    });
    const [serverA, serverB] = platform.servers;
    assert.ok(serverA && serverB);
    const ids: string[] = [];
    const devices = [];
    for (const [s, server] of [serverA, serverB].entries()) {
      for (let i = 0; i < DEVICES_PER_SERVER; i++) {
        const id = `r${s}-${i}`;
        ids.push(id);
        // Every device also belongs to one user, so a user fan-out needs the entries of both servers.
        devices.push(await platform.connect(server, id, { userId: 'restoring-user' }));
      }
    }
    // As in a platform that has run a while: the routers' watches have seen both servers.
    const serverIds = [serverA.serverId, serverB.serverId].sort();
    await waitUntil(
      () =>
        [platform?.api.registryWatch, platform?.processor?.processor.registryWatch].every(
          (watch) => JSON.stringify([...(watch?.knownServers ?? [])].sort()) === JSON.stringify(serverIds),
        ),
      { what: 'the routers to know both servers' },
    );

    await redis.restart({ kill: true });
    await waitUntil(
      () =>
        platform?.registry.liveServers().then(
          () => true,
          () => false,
        ),
      { what: 'Redis to answer again' },
    );

    // Sent at once: the servers have written back at most one entry each by now.
    const direct = await platform.call('POST', `/v1/devices/${ids.at(-1)}/messages`, {
      payload: { direct: 'during restore' },
    });
    const presence = await platform.call('GET', `/v1/devices/${ids.at(-1)}/presence`);
    const published = await platform.call('POST', '/v1/publish', {
      messages: [
        ...ids.map((id) => ({ id: `restoring-${id}`, target: { type: 'device', id }, payload: { n: id } })),
        { id: 'restoring-user', target: { type: 'user', id: 'restoring-user' }, payload: { n: 'user' } },
      ],
    });
    assert.equal(published.status, 202, JSON.stringify(published.body));

    // One terminal event per (request, device): the device targets, and the user's eight devices.
    const events = (
      await collectRecords(platform.kafka, platform.topics.deliveryEvents, ids.length * 2, {
        filter: (r) => DeliveryEvent.parse(recordJson(r)).terminal,
        timeoutMs: 30_000,
      })
    ).map((r) => DeliveryEvent.parse(recordJson(r)));
    const outcomes = events.map((e) => `${e.requestId} ${e.deviceId ?? '-'} ${e.outcome}`).sort();
    assert.deepEqual(
      outcomes,
      [
        ...ids.map((id) => `restoring-${id} ${id} delivered`),
        ...ids.map((id) => `restoring-user ${id} delivered`),
      ].sort(),
    );
    for (const d of devices) {
      assert.deepEqual(
        d.received
          .map((m) => m.id)
          .filter((id) => id.startsWith('restoring-'))
          .sort(),
        [`restoring-${d.id}`, 'restoring-user'].sort(),
      );
    }

    // Never a 404: the device may be connected and not written back yet.
    assert.equal(direct.status, 503, JSON.stringify(direct.body));
    assert.match(JSON.stringify(direct.body), /being restored/);
    // Nor `online: false`, for the same reason.
    assert.equal(presence.status, 503, JSON.stringify(presence.body));
    assert.match(JSON.stringify(presence.body), /being restored/);
    // The registry is whole again: the same push is delivered.
    const after = await platform.call('POST', `/v1/devices/${ids.at(-1)}/messages`, {
      payload: { direct: 'after restore' },
    });
    assert.equal(after.status, 200, JSON.stringify(after.body));
    assert.equal((after.body as { outcome?: string }).outcome, 'delivered');
    const online = await platform.call('GET', `/v1/devices/${ids.at(-1)}/presence`);
    assert.equal((online.body as { online?: boolean }).online, true);
  });

  it('with AOF, an outage that outlived the load reports: each server writes its report again on reconnect', async () => {
    redis = await startRedis({ persistence: 'aof' });
    // A report loop far slower than the test: only the reconnect can put the reports back in time.
    platform = await startOwnRedisPlatform('redis-restart-aof', redis.url, {
      servers: 2,
      env: { PUSHLINE_LOAD_REPORT_MS: '120000' },
    });
    const [serverA, serverB] = platform.servers;
    assert.ok(serverA && serverB);
    const listener = await platform.connect(serverB, 'aof-listener', { topics: ['news'] });
    assert.deepEqual(await listener.request(DeviceEvents.subscribe, { topic: 'news' }), {
      ok: true,
      topic: 'news',
    });
    const ready = await platform.registry.liveServers();
    assert.equal(ready.length, 2);

    // What an outage longer than the reports' TTL leaves behind: Redis kept everything (AOF) but
    // the load reports, which expired meanwhile. Written to the AOF at once, so the kill keeps it.
    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await admin.connect();
      await admin.config('SET', 'appendfsync', 'always');
      for (const s of [serverA, serverB]) await platform.registry.removeLoad(s.serverId);
    } finally {
      admin.disconnect();
    }
    assert.deepEqual(await platform.registry.liveServers(), []);
    await redis.restart({ kill: true });

    const servers = await waitUntil(
      async () => {
        const live = await platform?.registry.liveServers().catch(() => undefined);
        return live?.length === 2 ? live : undefined;
      },
      { timeoutMs: 15_000, what: 'both load reports to be written again after the reconnect' },
    );
    assert.deepEqual(servers.map((s) => s.serverId).sort(), [serverA.serverId, serverB.serverId].sort());
    // The registry kept its entries (no restore was needed): the listener is still registered.
    assert.equal((await platform.registry.lookup('aof-listener'))?.serverId, serverB.serverId);

    // A topic publish through the API finds a server again and reaches the subscriber.
    const published = await platform.call('POST', '/v1/topics/news/messages', {
      id: 'news-after-aof-restart',
      payload: { headline: 'listed again' },
    });
    assert.equal(published.status, 200, JSON.stringify(published.body));
    assert.equal((published.body as { delivered?: number }).delivered, 1);
    assert.ok(listener.received.some((m) => m.id === 'news-after-aof-restart'));
  });
});
