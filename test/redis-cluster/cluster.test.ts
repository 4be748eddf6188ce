import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { Command } from 'ioredis';
import { startRedisCluster, type RedisCluster } from '@pushline/devstack';
import { LEDGER_SCRIPTS, RequestLedger } from '@pushline/message-processor';
import { OFFLINE_SCRIPTS, RedisOfflineStore } from '@pushline/offline-store';
import type { DeliverResult, StoredMessage } from '@pushline/protocol';
import {
  IDEMPOTENCY_HEADER,
  IDEMPOTENCY_SCRIPTS,
  IdempotencyStore,
  REPLAYED_HEADER,
} from '@pushline/push-api';
import {
  REGISTRY_SCRIPTS,
  RedisDeviceRegistry,
  closeRedis,
  commonSlot,
  createRedisClient,
  isCluster,
  keySlot,
  type DeviceRecord,
  type RedisClient,
} from '@pushline/registry';
import { silentLogger } from '@pushline/telemetry';
import { uniquePrefix, waitUntil } from '@pushline/testkit';
import { startPlatform, type Platform } from '../support/platform.ts';

/**
 * The platform on a real Redis Cluster of three masters with a replica each (libs/devstack:
 * redis-server --cluster-enabled and redis-cli --cluster create), through ioredis's Cluster client.
 */

let cluster: RedisCluster;

before(async () => {
  cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 1 });
});

after(async () => {
  await cluster?.stop();
});

/** A client configured like the services' (PUSHLINE_REDIS_CLUSTER_NODES set). */
function clusterClient(): RedisClient {
  return createRedisClient({
    PUSHLINE_REDIS_URL: `redis://${cluster.startupNodes[0] as string}`,
    PUSHLINE_REDIS_CLUSTER_NODES: cluster.startupNodes,
    PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: 5_000,
    PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: 3_000,
    PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: 20,
  });
}

describe('devstack Redis Cluster', () => {
  it('is three masters, each with a replica, serving all 16384 slots', async () => {
    const nodes = await cluster.topology();
    const masters = nodes.filter((n) => n.role === 'master');
    const replicas = nodes.filter((n) => n.role === 'replica');
    assert.equal(masters.length, 3);
    assert.equal(replicas.length, 3);
    for (const m of masters) {
      assert.equal(replicas.filter((r) => r.masterId === m.id).length, 1, `one replica of ${m.address}`);
    }
    const slots = masters.reduce((sum, m) => sum + m.slots.reduce((s, [a, b]) => s + b - a + 1, 0), 0);
    assert.equal(slots, 16_384);
    assert.ok(nodes.every((n) => !n.failing));
    // Every node is its own redis-server process with cluster mode on.
    for (const node of cluster.nodes) {
      assert.ok(node.pid !== undefined);
      assert.match(await node.command('INFO', 'cluster'), /cluster_enabled:1/);
    }
  });
});

interface ScriptCall {
  readonly names: readonly string[];
  readonly keys: readonly string[];
}

/**
 * Records every script the client sends (EVALSHA of a defined command, or EVAL), named after the
 * definition whose Lua it runs, with the keys it was given.
 */
function recordScripts(client: RedisClient, scripts: Record<string, { lua: string }>): ScriptCall[] {
  // Scripts with the same Lua text share a SHA (the offline store's unlock and the ledger's
  // release are one compare-and-delete), so a call is named after all of them; the registry's
  // one-Redis register runs the same Lua as its cluster register, with three keys.
  const bySha = new Map<string, string[]>();
  for (const [name, s] of Object.entries(scripts)) {
    const sha = createHash('sha1').update(s.lua).digest('hex');
    bySha.set(sha, [...(bySha.get(sha) ?? []), name]);
  }
  const calls: ScriptCall[] = [];
  assert.ok(isCluster(client));
  const send = client.sendCommand.bind(client);
  client.sendCommand = (command: Command, ...rest: unknown[]) => {
    if (command.name === 'evalsha' || command.name === 'eval') {
      const [first, numKeys, ...more] = command.args.map(String);
      const sha =
        command.name === 'eval'
          ? createHash('sha1')
              .update(first ?? '')
              .digest('hex')
          : first;
      calls.push({
        names: bySha.get(sha ?? '') ?? [`unknown script ${sha}`],
        keys: more.slice(0, Number(numKeys)),
      });
    }
    return (send as (c: Command, ...r: unknown[]) => unknown)(command, ...rest) as ReturnType<
      typeof client.sendCommand
    >;
  };
  return calls;
}

function storedMessage(
  deviceId: string,
  requestId: string,
  overrides: Partial<StoredMessage> = {},
): StoredMessage {
  const now = Date.now();
  return {
    v: 1,
    requestId,
    target: { type: 'device', id: deviceId },
    payload: { n: requestId },
    createdAt: now,
    expiresAt: now + 60_000,
    attempts: 1,
    ...overrides,
  };
}

describe('every Lua script touches one slot', () => {
  it('registry, offline store, request ledger and idempotency scripts, each call on one slot', async () => {
    const all = { ...REGISTRY_SCRIPTS, ...OFFLINE_SCRIPTS, ...LEDGER_SCRIPTS, ...IDEMPOTENCY_SCRIPTS };
    const client = clusterClient();
    const calls = recordScripts(client, all);
    const prefix = `${uniquePrefix('slots')}:`;
    const devices = Array.from({ length: 24 }, (_, i) => `dev-${i}`);
    try {
      await client.connect();

      // Registry: register, refresh, unregister, restore, clearServer.
      const registry = new RedisDeviceRegistry({ redis: client, keyPrefix: prefix });
      const records: DeviceRecord[] = devices.map((deviceId, i) => ({
        deviceId,
        userId: `user-${i % 5}`,
        serverId: `srv-${i % 2}`,
        serverUrl: 'http://127.0.0.1:1',
        connectionId: `conn-${i}`,
        connectedAt: Date.now(),
        lastSeen: Date.now(),
      }));
      for (const r of records) await registry.register(r, 60);
      await registry.refresh(
        records.map((r) => ({
          deviceId: r.deviceId,
          connectionId: r.connectionId,
          userId: r.userId,
          serverId: r.serverId,
        })),
        120,
      );
      for (const r of records.slice(0, 4))
        assert.equal(await registry.unregister(r.deviceId, r.connectionId), true);
      assert.equal(await registry.restore(records.slice(0, 4), 60), 4);
      assert.ok((await registry.clearServer('srv-0')) > 0);

      // Offline store: store, drain (begin, lease, finish), a failed delivery (release, unlock),
      // a dead drain's lease (reclaim), an expiry (claim expired), the pending check.
      const store = new RedisOfflineStore({
        redis: client,
        keyPrefix: prefix,
        maxPerDevice: 10,
        leaseMs: 50,
        logger: silentLogger(),
      });
      const delivered: DeliverResult = { outcome: 'delivered', latencyMs: 1 };
      for (const d of devices) await store.store(d, storedMessage(d, `m-${d}`));
      assert.equal((await store.withPending(devices)).size, devices.length);
      for (const d of devices.slice(0, 8)) await store.drain(d, async () => delivered);
      for (const d of devices.slice(8, 12)) {
        await store.drain(d, async () => ({ outcome: 'not_connected' }) as DeliverResult);
      }
      // A drain that never finishes: its lease runs out and the sweeper takes it back.
      let leased = false;
      void store.drain(devices[12] as string, () => {
        leased = true;
        return new Promise<DeliverResult>(() => {});
      });
      await waitUntil(() => leased, { what: 'the stuck drain leased its message' });
      for (const d of devices.slice(13, 16)) {
        await store.store(d, storedMessage(d, `short-${d}`, { expiresAt: Date.now() + 5 }));
      }
      assert.ok((await store.sweepExpired(Date.now() + 120_000)) > 0);

      // Request ledger: claim (one and many), renew, record, complete, release.
      const ledger = new RequestLedger({
        redis: client,
        keyPrefix: prefix,
        instanceId: 'slots',
        claimTtlMs: 300,
        windowSeconds: 60,
        logger: silentLogger(),
      });
      const claims = devices.map((d, i) =>
        ledger.claimFor(`req-${d}`, i % 2 ? 'origin-a' : undefined, i % 3 === 0),
      );
      const statuses = await ledger.claimMany(claims.slice(1));
      assert.ok([...statuses.values()].every((s) => s === 'claimed'));
      assert.equal(
        await ledger.claim(claims[0] as (typeof claims)[0], AbortSignal.timeout(5_000)),
        'claimed',
      );
      ledger.start();
      try {
        await waitUntil(() => calls.some((c) => c.names.includes('pushlineLedgerRenew')), {
          what: 'a renewal round',
        });
      } finally {
        await ledger.close();
      }
      await ledger.recordOutcomes(
        claims.slice(0, 12).map((claim) => ({ claim, serialized: [] })),
        Date.now(),
      );
      await ledger.completeMany(claims.slice(0, 12));
      await ledger.releaseMany(claims.slice(12));

      // Idempotency: claim and complete, an unknown outcome completed late and taken over, a release.
      const idempotency = new IdempotencyStore({
        redis: client,
        keyPrefix: prefix,
        ttlSeconds: 60,
        pendingTtlMs: 5_000,
      });
      for (const d of devices.slice(0, 6)) {
        const first = await idempotency.claim('key-1', `idem-${d}`, { d });
        assert.equal(first.kind, 'claimed');
        if (first.kind !== 'claimed') continue;
        const late = await first.markUnknown();
        const retry = await idempotency.claim('key-1', `idem-${d}`, { d });
        assert.equal(retry.kind, 'claimed', 'a retry takes over an unknown outcome');
        if (retry.kind === 'claimed') await retry.complete({ status: 202, body: { d } });
        await late.completeLate({ status: 202, body: { d } });
        const released = await idempotency.claim('key-1', `idem-release-${d}`, { d });
        if (released.kind === 'claimed') await released.release();
      }
    } finally {
      await closeRedis(client);
    }

    // On a cluster the registry never sends its one-Redis script, whose keys are on three slots.
    const sentOnCluster = Object.keys(all).filter((name) => name !== 'pushlineRegisterIndexed');
    const registers = calls.filter((c) => c.names.includes('pushlineRegister'));
    assert.ok(registers.length > 0);
    assert.ok(
      registers.every((c) => c.keys.length === 1),
      'the three-key register (one Redis only) is never sent to a cluster',
    );
    const seen = new Set(calls.flatMap((c) => c.names));
    assert.deepEqual(
      sentOnCluster.filter((name) => !seen.has(name)),
      [],
      'every script was sent at least once',
    );
    assert.ok(
      !calls.some((c) => c.names[0]?.startsWith('unknown')),
      JSON.stringify(calls.find((c) => c.names[0]?.startsWith('unknown'))),
    );
    const crossSlot = calls.filter((c) => c.keys.length === 0 || commonSlot(c.keys) === -1);
    assert.deepEqual(crossSlot, [], 'every call of every script names keys of one slot');
    // The tags spread the work: the calls land on many slots, not one.
    const slots = new Set(calls.map((c) => keySlot(c.keys[0] as string)));
    assert.ok(slots.size > 20, `calls on ${slots.size} slots`);
  });
});

describe('the platform on a Redis Cluster', () => {
  let platform: Platform;

  before(async () => {
    platform = await startPlatform('redis-cluster', {
      redis: {
        redisUrl: `redis://${cluster.startupNodes[0] as string}`,
        redisClusterNodes: cluster.startupNodes,
      },
    });
  });
  after(() => platform?.close());

  it('delivers direct, async, topic and stored messages to devices on two connection servers', async () => {
    const [a, b] = platform.servers;
    assert.ok(a && b);
    const onA = await platform.connect(a, 'ca-1', 'cu-1');
    const onB = await platform.connect(b, 'cb-1', 'cu-1');
    for (const device of [onA, onB]) {
      assert.deepEqual(await device.request('subscribe', { topic: 'user:cu-1' }), {
        ok: true,
        topic: 'user:cu-1',
      });
    }

    // Direct: the push-api finds each device's server in the registry and calls it.
    for (const device of [onA, onB]) {
      const res = await platform.call('POST', `/v1/devices/${device.id}/messages`, {
        payload: { direct: device.id },
      });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal((res.body as { outcome: string }).outcome, 'delivered');
      assert.deepEqual(device.received.at(-1)?.payload, { direct: device.id });
    }

    // Topic, sync: the broadcast crosses servers through the sharded adapter (SPUBLISH).
    const topic = await platform.call('POST', '/v1/topics/user:cu-1/messages', { payload: 'news' });
    assert.equal(topic.status, 200, JSON.stringify(topic.body));
    assert.equal((topic.body as { delivered: number }).delivered, 2);

    // Async, through Kafka and the processor (request ledger on the cluster): a device, a user
    // (both devices, one on each server), a topic, and a message stored for a device that is away.
    const published = await platform.call('POST', '/v1/publish', {
      messages: [
        { target: { type: 'device', id: 'cb-1' }, payload: { async: 'device' } },
        { target: { type: 'user', id: 'cu-1' }, payload: { async: 'user' } },
        { target: { type: 'topic', id: 'user:cu-1' }, payload: { async: 'topic' } },
        { target: { type: 'device', id: 'away-1' }, payload: { async: 'stored' }, ttlSeconds: 600 },
      ],
    });
    assert.equal(published.status, 202, JSON.stringify(published.body));
    const payloads = (device: typeof onA) => device.received.map((m) => JSON.stringify(m.payload));
    await waitUntil(
      () =>
        ['{"async":"user"}', '{"async":"topic"}'].every((p) => payloads(onA).includes(p)) &&
        ['{"async":"device"}', '{"async":"user"}', '{"async":"topic"}'].every((p) =>
          payloads(onB).includes(p),
        ),
      { timeoutMs: 30_000, what: 'the async messages on both servers' },
    );
    assert.deepEqual(payloads(onA).sort(), [
      '"news"',
      '{"async":"topic"}',
      '{"async":"user"}',
      '{"direct":"ca-1"}',
    ]);
    assert.deepEqual(payloads(onB).sort(), [
      '"news"',
      '{"async":"device"}',
      '{"async":"topic"}',
      '{"async":"user"}',
      '{"direct":"cb-1"}',
    ]);

    // The message for the device that is away waits in the offline store (on the cluster) and is
    // drained when the device connects.
    const reader = clusterClient();
    try {
      const stored = new RedisOfflineStore({
        redis: reader,
        keyPrefix: `${platform.prefix}:`,
        maxPerDevice: 10,
        logger: silentLogger(),
      });
      await waitUntil(async () => (await stored.pending('away-1')) === 1, {
        timeoutMs: 30_000,
        what: 'the message for away-1 stored',
      });
    } finally {
      await closeRedis(reader);
    }
    const away = await platform.connect(b, 'away-1', 'cu-2');
    const drained = away.received[0] ?? (await away.nextMessage(30_000));
    assert.deepEqual(drained.payload, { async: 'stored' });

    // Idempotency keys on the cluster: the same key and body again is a replay.
    const send = () =>
      fetch(`${platform.api.url}/v1/publish`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${platform.apiKey}`,
          'content-type': 'application/json',
          [IDEMPOTENCY_HEADER]: 'cluster-idem-1',
        },
        body: JSON.stringify({ target: { type: 'device', id: 'ca-1' }, payload: { idem: 1 } }),
      });
    const first = await send();
    const again = await send();
    assert.equal(first.status, 202);
    assert.equal(again.status, 202);
    assert.equal(first.headers.get(REPLAYED_HEADER), null);
    assert.equal(again.headers.get(REPLAYED_HEADER), 'true');
    assert.deepEqual(await again.json(), await first.json());
  });
});
