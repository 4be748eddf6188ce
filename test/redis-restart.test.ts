import assert from 'node:assert/strict';
import { after, afterEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { startRedis, type RedisInstance } from '@pushline/devstack';
import { DeliveryEvent, DeviceEvents } from '@pushline/protocol';
import { RegistryIncompleteError } from '@pushline/registry';
import { collectRecords, recordJson, waitUntil } from '@pushline/testkit';
import { childServers, type ChildServers } from './support/child-servers.ts';
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
/** Connection servers as child processes, for a test that SIGSTOPs one; close() resumes and stops them. */
let children: ChildServers | undefined;

afterEach(async () => {
  await children?.close();
  children = undefined;
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
        [
          platform?.api.registryWatch,
          platform?.processor?.processor.registryWatch,
          serverA.server.registryWatch,
        ].every(
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
    // A device of the same user on the other server, not written back yet: not `not_connected`.
    const [sender] = devices;
    assert.ok(sender);
    const sent = await sender.request(DeviceEvents.send, {
      to: ids.at(-1),
      id: 'd2d-during-restore',
      payload: { d2d: 'during restore' },
    });
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
    // A device-to-device send is refused with an error to retry, never answered `not_connected`.
    assert.deepEqual(
      { ok: (sent as { ok?: boolean }).ok, code: (sent as { error?: { code?: string } }).error?.code },
      { ok: false, code: 'internal' },
      JSON.stringify(sent),
    );
    assert.match(JSON.stringify(sent), /being restored|may be incomplete/);
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
  it('with AOF, a server whose report expired during the outage and that has not reconnected yet: a broadcast waits for it instead of finding nobody', async () => {
    redis = await startRedis({ persistence: 'aof' });
    // Reports only on start and on reconnect within the test: a report missing after the outage
    // stays missing until its server reconnects.
    const env = { PUSHLINE_LOAD_REPORT_MS: '120000' };
    platform = await startOwnRedisPlatform('redis-aof-blind', redis.url, {
      servers: 1,
      processor: true,
      env,
    });
    const [serverA] = platform.servers;
    const processor = platform.processor?.processor;
    assert.ok(serverA && processor);
    // Server B runs as its own process, so it can be frozen for real while Redis restarts.
    children = childServers(platform);
    const serverB = await children.start('cs-b', env);
    const listener = await platform.connect(serverB, 'blind-listener', { topics: ['news'] });
    assert.deepEqual(await listener.request(DeviceEvents.subscribe, { topic: 'news' }), {
      ok: true,
      topic: 'news',
    });
    // As in a platform that has run a while: the processor's watch has seen both servers.
    const serverIds = [serverA.serverId, serverB.serverId].sort();
    await waitUntil(
      () => JSON.stringify([...processor.registryWatch.knownServers].sort()) === JSON.stringify(serverIds),
      {
        what: 'the processor to know both servers',
      },
    );

    const admin = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await admin.connect();
      // Every write reaches the AOF before its reply, so the kill below keeps it.
      await admin.config('SET', 'appendfsync', 'always');
    } finally {
      admin.disconnect();
    }
    serverB.pause();
    try {
      // B's report runs out while Redis is down (AOF keeps the expiry's deadline), as a report of a
      // server that reported last more than a TTL before Redis came back does.
      const reportB = (await platform.registry.liveServers()).find((s) => s.serverId === serverB.serverId);
      assert.ok(reportB, 'B is listed before the outage');
      await platform.registry.reportLoad(reportB, 1);
      await redis.restart({ kill: true, downForMs: 2_000 });
      // A reconnects and writes its report again; B, frozen, cannot.
      await waitUntil(
        async () => {
          const live = await platform?.registry.liveServers().catch(() => undefined);
          return live?.length === 1 && live[0]?.serverId === serverA.serverId;
        },
        { timeoutMs: 15_000, what: 'Redis to answer again with A listed and B not' },
      );

      const events = collectRecords(platform.kafka, platform.topics.deliveryEvents, 1, {
        filter: (r) => {
          const event = DeliveryEvent.parse(recordJson(r));
          return event.terminal && event.requestId === 'news-while-b-frozen';
        },
        timeoutMs: 60_000,
      });
      let terminal = false;
      void events.then(
        () => (terminal = true),
        () => (terminal = true),
      );
      const published = await platform.call('POST', '/v1/publish', {
        messages: [
          {
            id: 'news-while-b-frozen',
            target: { type: 'topic', id: 'news' },
            payload: { headline: 'wait for B' },
          },
        ],
      });
      assert.equal(published.status, 202, JSON.stringify(published.body));
      // Either the processor ended the broadcast (the fault: nobody listed, or only A, and the
      // adapter cannot reach frozen B) or it holds it back because the registry is incomplete.
      await waitUntil(
        async () => {
          if (terminal) return true;
          const body = await fetch(`${processor.opsUrl}/readyz`, { signal: AbortSignal.timeout(1_000) }).then(
            (res) => res.json() as Promise<{ registryComplete?: boolean }>,
            () => undefined,
          );
          return body?.registryComplete === false;
        },
        { timeoutMs: 30_000, what: 'the processor to handle the broadcast or hold it back' },
      );
      // What the processor waits for, unless it already ended the broadcast.
      const waitingFor = terminal
        ? 'nothing: the broadcast had ended'
        : await processor.registryWatch.confirm(processor.registryWatch.now()).then(
            () => 'nothing: the registry is complete',
            (err: unknown) => (err instanceof RegistryIncompleteError ? err.restoringServers : err),
          );

      serverB.resume();
      const [record] = await events;
      assert.ok(record);
      const event = DeliveryEvent.parse(recordJson(record));
      assert.deepEqual([event.outcome, event.deliveredCount], ['delivered', 1], JSON.stringify(event));
      assert.ok(listener.received.some((m) => m.id === 'news-while-b-frozen'));
      assert.deepEqual(waitingFor, [serverB.serverId], 'held back until B was listed again');
    } finally {
      serverB.resume();
    }
  });
});
