import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { createMetricsRegistry, silentLogger, type Registry } from '@pushline/telemetry';
import { deleteKeys, keysMatching, testRedis, uniquePrefix } from '@pushline/testkit';
import {
  RedisDeviceRegistry,
  RegistryIncompleteError,
  RegistryWatch,
  type RedisClient,
  type RegistryWatchOptions,
  type ServerLoad,
} from '@pushline/registry';

/**
 * The watch against a real Redis. "Redis lost the registry" is played by deleting every key of the
 * test's prefix, which is what a restart without persistence leaves of it (the shared test Redis
 * is never flushed).
 */

function load(serverId: string): ServerLoad {
  return {
    serverId,
    serverUrl: `http://127.0.0.1/${serverId}`,
    deviceUrl: 'http://127.0.0.1:7070',
    directUrl: 'http://127.0.0.1:7072',
    connections: 1,
    eventLoopDelayMs: 1,
    rssBytes: 1,
    heapUsedBytes: 1,
    draining: false,
    at: Date.now(),
  };
}

function tickingClock(): () => number {
  let t = Date.now();
  return () => ++t;
}

async function gauge(metrics: Registry): Promise<number | undefined> {
  const metric = await metrics.getSingleMetric('pushline_registry_complete')?.get();
  return metric?.values[0]?.value;
}

describe('RegistryWatch', () => {
  let redis: RedisClient;
  let prefix: string;
  let registry: RedisDeviceRegistry;
  const watches: RegistryWatch[] = [];

  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await redis.quit();
  });
  beforeEach(() => {
    prefix = `${uniquePrefix('watch')}:`;
    registry = new RedisDeviceRegistry({ redis, keyPrefix: prefix });
  });
  afterEach(async () => {
    await Promise.all(watches.splice(0).map((w) => w.close()));
  });

  async function watch(options: Partial<RegistryWatchOptions> = {}): Promise<RegistryWatch> {
    const w = new RegistryWatch({
      registry,
      redis,
      watcherId: 'router-1',
      logger: silentLogger(),
      // The background check stays out of the way: each test drives the checks itself.
      checkMs: 60_000,
      // A clock that moves on every reading, so "before" and "after" never share a millisecond.
      now: tickingClock(),
      ...options,
    });
    watches.push(w);
    await w.start();
    return w;
  }

  /** A connection server as the watch sees it: marked (its entries are in) and reporting load. */
  async function liveServer(serverId: string): Promise<void> {
    await registry.markServer(serverId, 60);
    await registry.reportLoad(load(serverId), 60);
  }

  /** The real registry, with the mark check the test wants in its place (counted, failing). */
  function withCheck(
    checkServer: RegistryWatchOptions['registry']['checkServer'],
  ): RegistryWatchOptions['registry'] {
    return {
      liveServers: () => registry.liveServers(),
      markServer: (...args) => registry.markServer(...args),
      serversMarked: (ids) => registry.serversMarked(ids),
      checkServer,
    };
  }

  /**
   * A watch waiting for a server that does not come back (serverGoneAfterMs 15 s): refused until
   * the last millisecond of a report TTL, confirmed once a check after it let the server go.
   */
  async function refusedForOneReportTtl(w: RegistryWatch, advance: (ms: number) => void): Promise<void> {
    await assert.rejects(w.confirm(w.now()), RegistryIncompleteError);
    advance(14_999);
    await assert.rejects(w.confirm(w.now()), RegistryIncompleteError);
    advance(1);
    await w.check();
    advance(1);
    await w.confirm(w.now());
    assert.equal(w.complete, true);
  }

  async function loseEverything(): Promise<void> {
    await deleteKeys(redis, await keysMatching(redis, `${prefix}*`));
  }

  it('confirms at once while Redis keeps its data', async () => {
    await liveServer('cs-a');
    const w = await watch();
    assert.deepEqual(w.knownServers, ['cs-a']);
    await w.confirm(w.now());
    assert.equal(w.complete, true);
  });

  it('after a loss, refuses until every server known before has its entries back, and says which', async () => {
    await liveServer('cs-a');
    await liveServer('cs-b');
    const changes: boolean[] = [];
    const metrics = createMetricsRegistry({}, false);
    const w = await watch({ onChange: (complete) => changes.push(complete), metrics });
    assert.equal(await gauge(metrics), 1);
    await loseEverything();

    const refused = await w.confirm(w.now()).then(
      () => assert.fail('confirmed an empty registry'),
      (err: unknown) => err,
    );
    assert.ok(refused instanceof RegistryIncompleteError);
    assert.deepEqual([...refused.restoringServers].sort(), ['cs-a', 'cs-b']);
    assert.equal(w.complete, false);
    assert.equal(await gauge(metrics), 0);

    // cs-a has written its entries back and marked them; cs-b is still at it (listed, unmarked).
    await liveServer('cs-a');
    await registry.reportLoad(load('cs-b'), 60);
    const still = await w.confirm(w.now()).catch((err: unknown) => err);
    assert.ok(still instanceof RegistryIncompleteError);
    assert.deepEqual(still.restoringServers, ['cs-b']);

    await registry.markServer('cs-b', 60);
    await w.check(); // sees the restore end; a read after that is confirmed
    await w.confirm(w.now());
    assert.equal(w.complete, true);
    assert.deepEqual(changes, [false, true]);
    assert.equal(await gauge(metrics), 1);
  });

  it('waits for a marked server to be listed again, so broadcasts find it', async () => {
    await liveServer('cs-a');
    const w = await watch();
    await loseEverything();
    await registry.markServer('cs-a', 60);
    await assert.rejects(w.confirm(w.now()), RegistryIncompleteError);
    await registry.reportLoad(load('cs-a'), 60);
    await w.check(); // sees the restore end; a read after that is confirmed
    await w.confirm(w.now());
  });

  it('counts a server it never saw, listed after the loss without its marks, as restoring', async () => {
    const w = await watch();
    await loseEverything();
    // Listed again before its restore ended (servers write their load report on reconnect).
    await registry.reportLoad(load('cs-new'), 60);
    const refused = await w.confirm(w.now()).catch((err: unknown) => err);
    assert.ok(refused instanceof RegistryIncompleteError);
    assert.deepEqual(refused.restoringServers, ['cs-new']);
    await registry.markServer('cs-new', 60);
    await w.check(); // sees the restore end; a read after that is confirmed
    await w.confirm(w.now());
  });

  it('refuses a read that began before a restore ended, though the registry is whole by the check', async () => {
    await liveServer('cs-a');
    let clock = Date.now();
    const w = await watch({ now: () => clock });
    const readAt = w.now();
    clock += 10;
    // Between the read and the check: Redis lost everything and cs-a wrote it all back.
    await loseEverything();
    await liveServer('cs-a');
    clock += 10;
    const refused = await w.confirm(readAt).catch((err: unknown) => err);
    assert.ok(refused instanceof RegistryIncompleteError, 'the read may have seen a part of the restore');
    assert.equal(w.complete, true);
    clock += 10;
    await w.confirm(w.now());
  });

  it('after an outage longer than a report TTL, still waits for the servers it knew before it', async () => {
    await liveServer('cs-a');
    let down = false;
    const outage = withCheck((...args) =>
      down ? Promise.reject(new Error('Connection is closed.')) : registry.checkServer(...args),
    );
    let clock = Date.now();
    const w = await watch({ registry: outage, serverGoneAfterMs: 15_000, now: () => clock });
    down = true;
    await assert.rejects(w.confirm(w.now()), /Connection is closed/);
    clock += 30_000; // the outage lasts two report TTLs
    // Redis is back, empty; cs-a has not reconnected yet (nothing of it is listed).
    await loseEverything();
    down = false;
    const refused = await w.confirm(w.now()).catch((err: unknown) => err);
    assert.ok(refused instanceof RegistryIncompleteError);
    assert.deepEqual(refused.restoringServers, ['cs-a']);
  });

  /** A registry whose mark check fails while `down` is set: Redis unreachable for the watch. */
  function outageRegistry(): { registry: RegistryWatchOptions['registry']; setDown(down: boolean): void } {
    let down = false;
    return {
      registry: withCheck((...args) =>
        down ? Promise.reject(new Error('Connection is closed.')) : registry.checkServer(...args),
      ),
      setDown: (value) => (down = value),
    };
  }

  it('after Redis was unreachable, waits for a server listed before whose report expired meanwhile (AOF kept the rest)', async () => {
    await liveServer('cs-a');
    await liveServer('cs-b');
    const outage = outageRegistry();
    const changes: boolean[] = [];
    const metrics = createMetricsRegistry({}, false);
    let clock = Date.now();
    const w = await watch({
      registry: outage.registry,
      serverGoneAfterMs: 15_000,
      now: () => clock,
      onChange: (complete) => changes.push(complete),
      metrics,
    });
    outage.setDown(true);
    await assert.rejects(w.confirm(w.now()), /Connection is closed/);
    clock += 30_000; // two report TTLs
    // Redis is back with its data (AOF) but cs-b's load report, which expired during the outage;
    // cs-a has written its report again on reconnect, cs-b has not reconnected yet.
    await registry.removeLoad('cs-b');
    outage.setDown(false);

    const refused = await w.confirm(w.now()).catch((err: unknown) => err);
    assert.ok(refused instanceof RegistryIncompleteError, 'a broadcast would have missed cs-b');
    assert.deepEqual(refused.restoringServers, ['cs-b']);
    assert.equal(w.complete, false);
    assert.equal(await gauge(metrics), 0);
    clock += 1_000;
    await assert.rejects(w.confirm(w.now()), RegistryIncompleteError);

    // cs-b reconnects and reports again; its marks survived with the rest of Redis's data.
    await registry.reportLoad(load('cs-b'), 60);
    await w.check(); // sees the wait end; a read after that is confirmed
    clock += 1;
    await w.confirm(w.now());
    assert.equal(w.complete, true);
    assert.deepEqual(changes, [false, true]);
    assert.equal(await gauge(metrics), 1);
  });

  it('after Redis was unreachable, lets a missing server go once it stayed unlisted for a report TTL', async () => {
    await liveServer('cs-a');
    await liveServer('cs-dead');
    const outage = outageRegistry();
    let clock = Date.now();
    const w = await watch({ registry: outage.registry, serverGoneAfterMs: 15_000, now: () => clock });
    outage.setDown(true);
    await assert.rejects(w.confirm(w.now()), /Connection is closed/);
    await registry.removeLoad('cs-dead');
    outage.setDown(false);
    await refusedForOneReportTtl(w, (ms) => (clock += ms));
  });

  it('lets a server whose report expires while it watches go at once, blind spell or not afterwards', async () => {
    await liveServer('cs-a');
    await liveServer('cs-b');
    const outage = outageRegistry();
    const changes: boolean[] = [];
    const w = await watch({ registry: outage.registry, onChange: (complete) => changes.push(complete) });
    // cs-b crashed: its report expires and a check sees it unlisted.
    await registry.removeLoad('cs-b');
    await w.confirm(w.now());
    assert.equal(w.complete, true);
    // An outage afterwards does not bring the server that was already gone back into the wait.
    outage.setDown(true);
    await assert.rejects(w.confirm(w.now()), /Connection is closed/);
    outage.setDown(false);
    await w.confirm(w.now());
    assert.equal(w.complete, true);
    assert.deepEqual(changes, []);
  });

  it('counts a reconnect of its client as a blind spell: a server listed before and missing after it is waited for', async () => {
    await liveServer('cs-a');
    await liveServer('cs-b');
    // A client of its own, so the reconnect below is the watch's alone.
    const own = testRedis();
    try {
      await own.connect();
      const w = await watch({
        redis: own,
        registry: new RedisDeviceRegistry({ redis: own, keyPrefix: prefix }),
      });
      // cs-b's report is gone by the time the client is connected again (no check ran meanwhile).
      await registry.removeLoad('cs-b');
      const ready = once(own, 'ready');
      own.disconnect(true);
      await ready;
      const refused = await w.confirm(w.now()).catch((err: unknown) => err);
      assert.ok(refused instanceof RegistryIncompleteError);
      assert.deepEqual(refused.restoringServers, ['cs-b']);

      await registry.reportLoad(load('cs-b'), 60);
      await w.check();
      await w.confirm(w.now());
      assert.equal(w.complete, true);
      await w.close();
    } finally {
      own.disconnect();
    }
  });

  it('lets a server that stays unlisted for a report TTL go: it died with the loss', async () => {
    await liveServer('cs-dead');
    let clock = Date.now();
    const w = await watch({ serverGoneAfterMs: 15_000, now: () => clock });
    await loseEverything();
    await refusedForOneReportTtl(w, (ms) => (clock += ms));
  });

  it('shares one check among the confirms that wait at the same time', async () => {
    await liveServer('cs-a');
    let checks = 0;
    const counted = withCheck((...args) => {
      checks++;
      return registry.checkServer(...args);
    });
    const w = await watch({ registry: counted });
    checks = 0;
    await Promise.all(Array.from({ length: 50 }, () => w.confirm(w.now())));
    // One check started by the first confirm, one after it for everyone who came while it ran.
    assert.ok(checks <= 2, `${checks} checks for 50 confirms`);
    assert.ok(checks >= 1);
  });

  it('reports Redis failing as Redis’s error, not as an incomplete registry', async () => {
    const failing = withCheck((...args) =>
      checksFail ? Promise.reject(new Error('Connection is closed.')) : registry.checkServer(...args),
    );
    let checksFail = false;
    const w = await watch({ registry: failing });
    checksFail = true;
    await assert.rejects(w.confirm(w.now()), /Connection is closed/);
    assert.equal(w.complete, true);
  });
});
