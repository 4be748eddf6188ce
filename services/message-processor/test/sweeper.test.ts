import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { freePort } from '@pushline/devstack';
import { RedisOfflineStore } from '@pushline/offline-store';
import type { StoredMessage } from '@pushline/protocol';
import { createRedisClient, type RedisClient } from '@pushline/registry';
import { createMetricsRegistry, silentLogger } from '@pushline/telemetry';
import { testRedis, uniquePrefix, waitUntil } from '@pushline/testkit';
import { createProcessorMetrics, type ProcessorMetrics } from '../src/metrics.ts';
import { Sweeper } from '../src/sweeper.ts';

function newMetrics(): ProcessorMetrics {
  return createProcessorMetrics(createMetricsRegistry({ service: 'sweeper-test' }, false), {
    inFlight: () => 0,
    lag: () => 0,
    dependencies: () => ({ redis: true, kafka: true, registry: true }),
    partitions: () => [],
  });
}

async function total(
  metrics: ProcessorMetrics,
  name: 'sweptExpired' | 'loopRuns' | 'loopFailures',
): Promise<number> {
  const { values } = await metrics[name].get();
  return values
    .filter((v) => name === 'sweptExpired' || v.labels.loop === 'sweeper')
    .reduce((sum, v) => sum + v.value, 0);
}

/** A message for `deviceId` whose ttl ran out `agoMs` ago (negative: still live). */
function stored(requestId: string, deviceId: string, agoMs: number): StoredMessage {
  const now = Date.now();
  return {
    v: 1,
    requestId,
    origin: 'key-1',
    target: { type: 'device', id: deviceId },
    payload: { requestId },
    createdAt: now - Math.max(agoMs, 0) - 60_000,
    expiresAt: now - agoMs,
    attempts: 1,
  };
}

describe('Sweeper', () => {
  let redis: RedisClient;
  const cleanup: (() => Promise<void> | void)[] = [];

  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await redis.quit();
  });
  afterEach(async () => {
    for (const step of cleanup.splice(0).reverse()) await step();
  });

  function store(client: RedisClient = redis): RedisOfflineStore {
    return new RedisOfflineStore({
      redis: client,
      keyPrefix: `${uniquePrefix('sweeper')}:`,
      partitions: 2,
      maxPerDevice: 100,
      logger: silentLogger(),
    });
  }

  function sweeper(s: RedisOfflineStore, metrics: ProcessorMetrics, batch: number): Sweeper {
    const loop = new Sweeper({ store: s, intervalMs: 10, batch, metrics, logger: silentLogger() });
    cleanup.push(() => loop.close());
    return loop;
  }

  it('expires every message past its ttl, over as many sweeps as the batch needs, and keeps the live ones', async () => {
    const s = store();
    for (let i = 0; i < 5; i++) await s.store('dev-1', stored(`old-${i}`, 'dev-1', 1_000));
    await s.store('dev-2', stored('old-x', 'dev-2', 1));
    await s.store('dev-1', stored('live-1', 'dev-1', -3_600_000));
    await s.store('dev-2', stored('live-2', 'dev-2', -3_600_000));
    assert.equal(await s.pending('dev-1'), 6);
    const metrics = newMetrics();
    const loop = sweeper(s, metrics, 2);
    await loop.start();
    await waitUntil(async () => (await total(metrics, 'sweptExpired')) === 6, {
      what: 'six messages expired',
    });
    assert.equal(await s.pending('dev-1'), 1);
    assert.equal(await s.pending('dev-2'), 1);
    assert.ok((await total(metrics, 'loopRuns')) >= 1);
    assert.equal(await total(metrics, 'loopFailures'), 0);
    // What is left is the live messages, which the device still gets.
    const drained: string[] = [];
    await s.drain('dev-1', (msg) => {
      drained.push(msg.requestId);
      return Promise.resolve({ outcome: 'delivered', latencyMs: 0 });
    });
    assert.deepEqual(drained, ['live-1']);
  });

  it('keeps sweeping: a message that expires later is expired by a later sweep', async () => {
    const s = store();
    const metrics = newMetrics();
    const loop = sweeper(s, metrics, 10);
    await loop.start();
    await waitUntil(async () => (await total(metrics, 'loopRuns')) >= 1, { what: 'a first sweep' });
    await s.store('dev-late', stored('late', 'dev-late', 1));
    await waitUntil(async () => (await total(metrics, 'sweptExpired')) === 1, {
      what: 'the late message expired',
    });
    assert.equal(await s.pending('dev-late'), 0);
  });

  it('counts a sweep against an unreachable Redis as a failure and keeps trying', async () => {
    const port = await freePort();
    const dead = createRedisClient(
      {
        PUSHLINE_REDIS_URL: `redis://127.0.0.1:${port}`,
        PUSHLINE_REDIS_CLUSTER_NODES: undefined,
        PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: 1_000,
        PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: 500,
        PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: 0,
      },
      { retryStrategy: () => 50, lazyConnect: true },
    );
    // Expected errors of the unreachable Redis; the sweeper counts them.
    dead.on('error', () => undefined);
    cleanup.push(() => dead.disconnect());
    const metrics = newMetrics();
    const loop = sweeper(store(dead), metrics, 10);
    await loop.start();
    await waitUntil(async () => (await total(metrics, 'loopFailures')) >= 2, { what: 'two failed sweeps' });
    assert.equal(await total(metrics, 'sweptExpired'), 0);
    assert.equal(await total(metrics, 'loopRuns'), 0);
  });

  it('stops on close, idempotently, also when it never started', async () => {
    const s = store();
    const metrics = newMetrics();
    const idle = new Sweeper({ store: s, intervalMs: 10, batch: 10, metrics, logger: silentLogger() });
    await idle.close();
    const loop = sweeper(s, metrics, 10);
    await loop.start();
    await waitUntil(async () => (await total(metrics, 'loopRuns')) >= 1, { what: 'a first sweep' });
    await Promise.all([loop.close(), loop.close()]);
    await loop.close();
    const runs = await total(metrics, 'loopRuns');
    // A message that expired after the close is left: the loop has stopped. Sweeping it by hand
    // finds it, so it was there to be swept.
    await s.store('dev-after', stored('after', 'dev-after', 1));
    assert.equal(await s.sweepExpired(Date.now(), 10), 1);
    assert.equal(await total(metrics, 'loopRuns'), runs);
    assert.equal(await total(metrics, 'sweptExpired'), 0);
  });
});
