import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Socket } from 'socket.io';
import { freePort } from '@pushline/devstack';
import { createRedisClient, RedisDeviceRegistry, registryKeys, type RedisClient } from '@pushline/registry';
import { createMetricsRegistry, silentLogger, type Counter } from '@pushline/telemetry';
import { testRedis, uniquePrefix, waitUntil } from '@pushline/testkit';
import { DeviceConnection } from '../src/connection.ts';
import { Liveness, type LivenessOptions } from '../src/liveness.ts';
import { LocalDevices } from '../src/local-devices.ts';
import { createMetrics, type ConnectionServerMetrics } from '../src/metrics.ts';
import { ConnectionRateLimit } from '../src/rate-limit.ts';

let nextConnection = 0;

/**
 * A connection over a stand-in socket. `due`, the sweep and the rate limit read only the
 * connection's clock fields and ids; the socket is touched for its id and `data` slot alone,
 * so the stand-in carries just those (the cast is the price of socket.io's wide type).
 */
function connection(deviceId: string, lifetimeMs: number): DeviceConnection {
  const socket = { id: `conn-${++nextConnection}`, data: {} } as unknown as Socket;
  return new DeviceConnection({
    socket,
    claims: { sub: deviceId, uid: `user-of-${deviceId}`, exp: Math.floor(Date.now() / 1000) + 3600 },
    lifetimeMs,
  });
}

async function counterValue(counter: Counter, labels: Record<string, string>): Promise<number> {
  const { values } = await counter.get();
  const found = values.find((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value));
  return found?.value ?? 0;
}

function newMetrics(devices: LocalDevices): ConnectionServerMetrics {
  return createMetrics(createMetricsRegistry({ service: 'liveness-unit' }, false), () => devices.size);
}

const REFRESH_MS = 1_000;
const GRACE_MS = 500;

function liveness(devices: LocalDevices, overrides: Partial<LivenessOptions> = {}): Liveness {
  return new Liveness({
    devices,
    // `due` never calls the registry; the loops that do are not started in these cases.
    registry: new RedisDeviceRegistry({ redis: testRedis({ lazyConnect: true }), keyPrefix: 'unused:' }),
    metrics: newMetrics(devices),
    logger: silentLogger(),
    serverId: 'cs-unit',
    ttlSeconds: 60,
    refreshMs: REFRESH_MS,
    closeGraceMs: GRACE_MS,
    idleTimeoutMs: 0,
    recycle: () => undefined,
    ...overrides,
  });
}

describe('Liveness.due', () => {
  /** One connection per row, registered to expire `expiresIn` ms after `now`, recycled `lifetimeMs` after it connected. */
  const rows = [
    {
      label: 'a record that expires before its connection is recycled, within two refresh periods',
      lifetimeMs: 3_600_000,
      expiresIn: 2 * REFRESH_MS,
      due: true,
    },
    {
      label: 'the same record with more than two refresh periods left',
      lifetimeMs: 3_600_000,
      expiresIn: 2 * REFRESH_MS + 1,
      due: false,
    },
    {
      label: 'a record already past its expiry time',
      lifetimeMs: 3_600_000,
      expiresIn: -5,
      due: true,
    },
    {
      label: 'a record that outlives the recycle, grace and one refresh period',
      lifetimeMs: 100,
      expiresIn: 100 + GRACE_MS + REFRESH_MS + 1,
      due: false,
    },
    {
      label: 'a record that expires exactly when recycle + grace + refresh ends (the boundary is refreshed)',
      lifetimeMs: 100,
      expiresIn: 100 + GRACE_MS + REFRESH_MS,
      due: true,
    },
  ] as const;

  for (const row of rows) {
    it(`${row.due ? 'refreshes' : 'leaves'} ${row.label}`, () => {
      const devices = new LocalDevices();
      const conn = connection('dev-1', row.lifetimeMs);
      devices.add(conn);
      // The clock of the check is the connection's own, so the case does not depend on time passing.
      const now = conn.connectedAt;
      conn.registryExpiresAt = now + row.expiresIn;
      const due = liveness(devices).due(now);
      assert.deepEqual(
        due.map((c) => c.deviceId),
        row.due ? ['dev-1'] : [],
      );
    });
  }

  it('never refreshes a connection that is not registered yet, or already closed', () => {
    const devices = new LocalDevices();
    const unregistered = connection('dev-unregistered', 3_600_000);
    const closed = connection('dev-closed', 3_600_000);
    const live = connection('dev-live', 3_600_000);
    for (const c of [unregistered, closed, live]) devices.add(c);
    const now = live.connectedAt;
    closed.registryExpiresAt = now + 10;
    closed.markClosed();
    live.registryExpiresAt = now + 10;
    assert.equal(unregistered.registryExpiresAt, 0);
    assert.deepEqual(
      liveness(devices)
        .due(now)
        .map((c) => c.deviceId),
      ['dev-live'],
    );
  });

  it('picks exactly the due connections out of many', () => {
    const devices = new LocalDevices();
    const expected: string[] = [];
    let now = 0;
    for (let i = 0; i < 50; i++) {
      const conn = connection(`dev-${i}`, 3_600_000);
      devices.add(conn);
      now = Math.max(now, conn.connectedAt);
    }
    let i = 0;
    for (const conn of devices.values()) {
      const soon = i % 3 === 0;
      conn.registryExpiresAt = now + (soon ? REFRESH_MS : 10 * REFRESH_MS);
      if (soon) expected.push(conn.deviceId);
      i++;
    }
    assert.deepEqual(
      liveness(devices)
        .due(now)
        .map((c) => c.deviceId)
        .sort(),
      expected.sort(),
    );
  });
});

describe('Liveness sweep', () => {
  it('recycles a connection past its lifetime once, and leaves one within it', async () => {
    const devices = new LocalDevices();
    const expired = connection('dev-expired', 0);
    const live = connection('dev-live', 3_600_000);
    devices.add(expired);
    devices.add(live);
    const recycled: string[] = [];
    const loop = liveness(devices, {
      sweepMs: 5,
      idleTimeoutMs: 3_600_000,
      recycle: (conn, why) => {
        recycled.push(`${conn.deviceId} ${why}`);
        // What the server's recycle does first: note why it is closing, so later sweeps skip it.
        conn.closeReason = why;
      },
    });
    loop.start();
    try {
      await waitUntil(() => recycled.length >= 1, { what: 'the expired connection recycled' });
      // A connection added now is seen by a later sweep: by then the first one was swept again.
      devices.add(connection('dev-later', 0));
      await waitUntil(() => recycled.length >= 2, { what: 'a later sweep' });
      assert.deepEqual(recycled, ['dev-expired lifetime_expired', 'dev-later lifetime_expired']);
    } finally {
      await loop.close();
    }
  });

  it('closes a connection without traffic for the idle timeout as idle, and not when it is 0', async () => {
    for (const idleTimeoutMs of [1, 0]) {
      const devices = new LocalDevices();
      const idle = connection('dev-idle', 3_600_000);
      devices.add(idle);
      const recycled: string[] = [];
      const loop = liveness(devices, {
        sweepMs: 5,
        idleTimeoutMs,
        recycle: (conn, why) => {
          recycled.push(`${conn.deviceId} ${why}`);
          conn.closeReason = why;
        },
      });
      loop.start();
      try {
        if (idleTimeoutMs > 0) {
          await waitUntil(() => recycled.length >= 1, { what: 'the idle connection closed' });
          assert.deepEqual(recycled, ['dev-idle idle_timeout']);
        } else {
          // Same marker as above: a connection past its lifetime, added now, is seen by a later sweep.
          devices.add(connection('dev-marker', 0));
          await waitUntil(() => recycled.length >= 1, { what: 'a sweep after the idle check' });
          assert.deepEqual(recycled, ['dev-marker lifetime_expired']);
        }
      } finally {
        await loop.close();
      }
    }
  });

  it('counts a recycle that throws and goes on with the other connections', async () => {
    const devices = new LocalDevices();
    const first = connection('dev-a', 0);
    const second = connection('dev-b', 0);
    devices.add(first);
    devices.add(second);
    const metrics = newMetrics(devices);
    const recycled: string[] = [];
    const loop = liveness(devices, {
      sweepMs: 5,
      metrics,
      recycle: (conn) => {
        if (conn.deviceId === 'dev-a' && conn.closeReason === undefined) {
          conn.closeReason = 'server_kicked';
          throw new Error('socket gone');
        }
        recycled.push(conn.deviceId);
        conn.closeReason = 'lifetime_expired';
      },
    });
    loop.start();
    try {
      await waitUntil(() => recycled.includes('dev-b'), { what: 'dev-b recycled' });
      await waitUntil(
        async () => (await counterValue(metrics.loopFailures, { loop: 'liveness_sweep' })) === 1,
        {
          what: 'the failure counted',
        },
      );
      assert.deepEqual(recycled, ['dev-b']);
    } finally {
      await loop.close();
    }
  });
});

describe('Liveness refresh (real Redis)', () => {
  let redis: RedisClient;
  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await redis.quit();
  });

  it('extends only the due records in the registry, and moves their expiry forward', async () => {
    const prefix = `${uniquePrefix('liveness-refresh')}:`;
    const registry = new RedisDeviceRegistry({ redis, keyPrefix: prefix });
    const keys = registryKeys(prefix);
    const devices = new LocalDevices();
    const due = connection('dev-due', 3_600_000);
    const notDue = connection('dev-not-due', 3_600_000);
    for (const conn of [due, notDue]) {
      devices.add(conn);
      await registry.register(
        {
          deviceId: conn.deviceId,
          userId: conn.userId,
          serverId: 'cs-unit',
          serverUrl: 'http://127.0.0.1:1',
          connectionId: conn.connectionId,
          connectedAt: conn.connectedAt,
          lastSeen: conn.connectedAt,
        },
        5,
      );
    }
    due.registryExpiresAt = Date.now() + 10;
    const notDueExpiry = Date.now() + 3_600_000;
    notDue.registryExpiresAt = notDueExpiry;
    const metrics = newMetrics(devices);
    const loop = new Liveness({
      devices,
      registry,
      metrics,
      logger: silentLogger(),
      serverId: 'cs-unit',
      ttlSeconds: 600,
      refreshMs: 20,
      closeGraceMs: 0,
      idleTimeoutMs: 0,
      recycle: () => undefined,
    });
    const before = due.registryExpiresAt;
    loop.start();
    try {
      await waitUntil(() => due.registryExpiresAt > before + 60_000, { what: 'the due record refreshed' });
      await loop.close();
      assert.ok((await redis.pttl(keys.device('dev-due'))) > 5_000, 'the due record lives the new ttl');
      assert.ok((await redis.pttl(keys.device('dev-not-due'))) <= 5_000, 'the other record was left alone');
      assert.equal(notDue.registryExpiresAt, notDueExpiry);
      assert.ok((await counterValue(metrics.registryOps, { op: 'refresh', result: 'ok' })) >= 1);
      assert.ok((await counterValue(metrics.loopRuns, { loop: 'registry_refresh' })) >= 1);
    } finally {
      await loop.close();
    }
  });

  it('counts a refresh against an unreachable Redis as a failure and keeps the old expiry', async () => {
    const port = await freePort();
    const deadRedis = createRedisClient(
      {
        PUSHLINE_REDIS_URL: `redis://127.0.0.1:${port}`,
        PUSHLINE_REDIS_CLUSTER_NODES: undefined,
        PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: 1_000,
        PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: 500,
        PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: 0,
      },
      { retryStrategy: () => 50 },
    );
    // Expected errors of the unreachable Redis; counted by the loop under test.
    deadRedis.on('error', () => undefined);
    const devices = new LocalDevices();
    const conn = connection('dev-1', 3_600_000);
    devices.add(conn);
    const expiry = Date.now() + 10;
    conn.registryExpiresAt = expiry;
    const metrics = newMetrics(devices);
    const loop = new Liveness({
      devices,
      registry: new RedisDeviceRegistry({ redis: deadRedis, keyPrefix: `${uniquePrefix('liveness-dead')}:` }),
      metrics,
      logger: silentLogger(),
      serverId: 'cs-unit',
      ttlSeconds: 600,
      refreshMs: 20,
      closeGraceMs: 0,
      idleTimeoutMs: 0,
      recycle: () => undefined,
    });
    loop.start();
    try {
      await waitUntil(
        async () => (await counterValue(metrics.loopFailures, { loop: 'registry_refresh' })) >= 2,
        {
          what: 'two refresh failures counted (the loop keeps retrying)',
        },
      );
      assert.equal(conn.registryExpiresAt, expiry);
      assert.ok((await counterValue(metrics.registryOps, { op: 'refresh', result: 'error' })) >= 2);
      assert.equal(await counterValue(metrics.loopRuns, { loop: 'registry_refresh' }), 0);
    } finally {
      await loop.close();
      deadRedis.disconnect();
    }
  });
});

describe('ConnectionRateLimit', () => {
  // A rate this low adds no token while a test runs, so the counts below do not depend on time.
  const SLOW = 1e-6;

  it('lets a connection take `burst` requests, then refuses', () => {
    const limit = new ConnectionRateLimit(SLOW, 3);
    const conn = connection('dev-1', 3_600_000);
    assert.deepEqual(
      Array.from({ length: 5 }, () => limit.take(conn)),
      [true, true, true, false, false],
    );
  });

  it('gives every connection its own bucket, even of the same device', () => {
    const limit = new ConnectionRateLimit(SLOW, 1);
    const first = connection('dev-1', 3_600_000);
    const second = connection('dev-1', 3_600_000);
    const other = connection('dev-2', 3_600_000);
    assert.equal(limit.take(first), true);
    assert.equal(limit.take(first), false);
    assert.equal(limit.take(second), true, 'a reconnect starts with a full bucket');
    assert.equal(limit.take(other), true);
  });

  it('refills at its rate', () => {
    // A million tokens a second: the bucket is full again by the next call.
    const limit = new ConnectionRateLimit(1e9, 1);
    const conn = connection('dev-1', 3_600_000);
    let refused = 0;
    for (let i = 0; i < 100; i++) if (!limit.take(conn)) refused++;
    assert.ok(refused < 100, 'tokens came back between takes');
  });

  it('exposes its configuration and refuses an impossible one', () => {
    const limit = new ConnectionRateLimit(5, 10);
    assert.equal(limit.ratePerS, 5);
    assert.equal(limit.burst, 10);
    const conn = connection('dev-1', 3_600_000);
    assert.throws(() => new ConnectionRateLimit(0, 1).take(conn), RangeError);
    assert.throws(() => new ConnectionRateLimit(1, 0).take(conn), RangeError);
  });
});
