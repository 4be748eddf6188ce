import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { freePort } from '@pushline/devstack';
import type { OutgoingRecord, Producer } from '@pushline/kafka';
import type { DeliveryEvent } from '@pushline/protocol';
import { createRedisClient, type RedisClient } from '@pushline/registry';
import { createMetricsRegistry, silentLogger, trace } from '@pushline/telemetry';
import { testRedis, uniquePrefix, waitUntil } from '@pushline/testkit';
import { DependencyError, DependencyGate, type Dependency } from '../src/dependency-gate.ts';
import { createProcessorMetrics } from '../src/metrics.ts';
import { OutcomeCommitter } from '../src/outcome-committer.ts';
import { OutcomeRecorder } from '../src/outcomes.ts';
import { RequestLedger, type Claim } from '../src/request-ledger.ts';

const TOPIC = 'delivery-events';

/**
 * The Kafka side of the commit: records every produce and fails while `failing` is set, so the
 * committer's grouping and retry rules can be followed produce by produce. Requests are marked
 * done in the real Redis.
 */
class ScriptedProducer implements Producer {
  readonly sends: { topic: string; records: readonly OutgoingRecord[] }[] = [];
  attempts = 0;
  failing = false;
  /** While set, a produce waits for it before it succeeds. */
  hold: Promise<void> | undefined;

  start(): Promise<void> {
    return Promise.resolve();
  }

  async send(topic: string, records: readonly OutgoingRecord[]): Promise<void> {
    this.attempts++;
    if (this.hold) await this.hold;
    if (this.failing) throw new Error('scripted broker outage');
    this.sends.push({ topic, records });
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function event(requestId: string, deviceId: string): DeliveryEvent {
  return {
    v: 1,
    requestId,
    target: { type: 'device', id: deviceId },
    deviceId,
    outcome: 'delivered',
    terminal: true,
    source: 'async',
    latencyMs: 3,
    attempts: 1,
    at: Date.now(),
  };
}

const never = new AbortController().signal;

describe('OutcomeCommitter', () => {
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

  interface Rig {
    readonly committer: OutcomeCommitter;
    readonly producer: ScriptedProducer;
    readonly ledger: RequestLedger;
    readonly gate: DependencyGate;
    readonly retriedDependencies: Dependency[];
    readonly changes: string[];
    claim(requestId: string): Claim;
  }

  function rig(label: string, ledgerRedis: RedisClient = redis): Rig {
    const producer = new ScriptedProducer();
    const registry = createMetricsRegistry({ service: 'committer-test' }, false);
    const metrics = createProcessorMetrics(registry, {
      inFlight: () => 0,
      lag: () => 0,
      dependencies: () => ({ redis: true, kafka: true, registry: true }),
      partitions: () => [],
    });
    const ledger = new RequestLedger({
      redis: ledgerRedis,
      keyPrefix: `${uniquePrefix(label)}:`,
      instanceId: 'committer-test',
      claimTtlMs: 10_000,
      windowSeconds: 60,
      logger: silentLogger(),
    });
    const changes: string[] = [];
    const gate = new DependencyGate({
      probes: {
        kafka: () => (producer.failing ? Promise.reject(new Error('down')) : Promise.resolve()),
        redis: () => ledgerRedis.ping(),
        registry: () => Promise.resolve(),
      },
      probeTimeoutMs: 500,
      logger: silentLogger(),
      onChange: (dependency, up) => changes.push(`${dependency} ${up ? 'up' : 'down'}`),
    });
    cleanup.push(() => gate.close());
    // Should a test fail midway, its pending commits still end rather than retry forever.
    cleanup.push(() => {
      producer.failing = false;
    });
    const retriedDependencies: Dependency[] = [];
    const committer = new OutcomeCommitter({
      outcomes: new OutcomeRecorder({
        producer,
        topic: TOPIC,
        metrics,
        tracer: trace.getTracer('committer-test'),
      }),
      ledger,
      gate,
      logger: silentLogger(),
      onRetry: (dependency) => retriedDependencies.push(dependency),
    });
    return {
      committer,
      producer,
      ledger,
      gate,
      retriedDependencies,
      changes,
      claim: (requestId) => ledger.claimFor(requestId, 'key-1'),
    };
  }

  async function claimed(r: Rig, requestId: string): Promise<Claim> {
    const c = r.claim(requestId);
    assert.equal(await r.ledger.claim(c, never), 'claimed');
    return c;
  }

  it('commits requests handed in together in one produce and marks them all done', async () => {
    const r = rig('oc-group');
    const claims = await Promise.all(['r-1', 'r-2', 'r-3'].map((id) => claimed(r, id)));
    await Promise.all(
      claims.map((c, i) =>
        r.committer.commit(c, [event(c.requestId, `dev-${i}`)], { traceparent: `tp-${i}` }, never),
      ),
    );
    assert.equal(r.producer.sends.length, 1);
    const [send] = r.producer.sends;
    assert.equal(send?.topic, TOPIC);
    assert.deepEqual(
      send?.records.map((rec) => [
        rec.key,
        (JSON.parse(String(rec.value)) as DeliveryEvent).requestId,
        rec.headers,
      ]),
      [
        ['dev-0', 'r-1', { traceparent: 'tp-0' }],
        ['dev-1', 'r-2', { traceparent: 'tp-1' }],
        ['dev-2', 'r-3', { traceparent: 'tp-2' }],
      ],
    );
    for (const c of claims) assert.equal(await redis.get(c.key), 'done');
    // A request marked done is not claimed again.
    assert.equal(await r.ledger.claim(r.claim('r-1'), never), 'done');
    assert.equal(r.ledger.held, 0);
  });

  it('records the events in the ledger before it produces them, and clears them with the done mark', async () => {
    const r = rig('oc-recorded');
    const c = await claimed(r, 'r-1');
    const events = [event('r-1', 'dev-a'), event('r-1', 'dev-b')];
    let release = () => {};
    r.producer.hold = new Promise<void>((resolve) => (release = resolve));
    const before = Date.now();
    const committed = r.committer.commit(c, events, {}, never);
    await waitUntil(() => r.producer.attempts === 1, { what: 'the produce in flight' });
    // Killed here, a processor leaves the events for the request's next holder.
    const recorded = await r.ledger.recordedOutcome(c);
    assert.deepEqual(recorded?.events, events);
    assert.ok(recorded !== undefined && recorded.at >= before && recorded.at <= Date.now());
    assert.notEqual(await redis.get(c.key), 'done');
    release();
    await committed;
    assert.equal(await redis.get(c.key), 'done');
    assert.equal(await r.ledger.recordedOutcome(c), undefined);
    assert.equal(await redis.exists(c.outcomeKey), 0);
  });

  it('a request with nothing left to publish is only marked done', async () => {
    const r = rig('oc-empty');
    const c = await claimed(r, 'r-1');
    await r.committer.commit(c, [], {}, never);
    assert.equal(r.producer.attempts, 0, 'no produce');
    assert.equal(await redis.get(c.key), 'done');
  });

  it('keeps every event of a request, in order, keyed by device (by target when none)', async () => {
    const r = rig('oc-order');
    const c = await claimed(r, 'r-1');
    const broadcast: DeliveryEvent = {
      ...event('r-1', 'x'),
      target: { type: 'topic', id: 'news' },
      deviceId: undefined,
      deliveredCount: 2,
    };
    await r.committer.commit(c, [event('r-1', 'dev-a'), event('r-1', 'dev-b'), broadcast], {}, never);
    assert.deepEqual(
      r.producer.sends[0]?.records.map((rec) => rec.key),
      ['dev-a', 'dev-b', 'news'],
    );
  });

  it('puts requests that arrive during a commit into the next one', async () => {
    const r = rig('oc-next');
    const [a, b, c] = await Promise.all(['r-a', 'r-b', 'r-c'].map((id) => claimed(r, id)));
    let release = () => {};
    r.producer.hold = new Promise<void>((resolve) => (release = resolve));
    const first = r.committer.commit(a as Claim, [event('r-a', 'dev-a')], {}, never);
    await waitUntil(() => r.producer.attempts === 1, { what: 'the first produce in flight' });
    const later = [
      r.committer.commit(b as Claim, [event('r-b', 'dev-b')], {}, never),
      r.committer.commit(c as Claim, [event('r-c', 'dev-c')], {}, never),
    ];
    r.producer.hold = undefined;
    release();
    await Promise.all([first, ...later]);
    assert.deepEqual(
      r.producer.sends.map((s) => s.records.map((rec) => rec.key)),
      [['dev-a'], ['dev-b', 'dev-c']],
    );
  });

  it('marks a request without events done, producing nothing', async () => {
    const r = rig('oc-empty');
    const c = await claimed(r, 'r-empty');
    await r.committer.commit(c, [], {}, never);
    assert.equal(r.producer.sends.length, 0);
    assert.equal(await redis.get(c.key), 'done');
  });

  it('retries a failing produce in place, closing the gate for kafka until it answers', async () => {
    const r = rig('oc-kafka-retry');
    const c = await claimed(r, 'r-1');
    r.producer.failing = true;
    const committed = r.committer.commit(c, [event('r-1', 'dev-1')], {}, never);
    await waitUntil(() => r.retriedDependencies.length >= 2, { what: 'two failed produces' });
    assert.equal(r.gate.isUp('kafka'), false);
    assert.equal(r.gate.isOpen(), false, 'no new record starts while outcomes cannot be written');
    const beforeWritten = await redis.get(c.key);
    // Let the commit finish whatever the checks above found, so no retry loop outlives the test.
    r.producer.failing = false;
    await committed;
    assert.equal(beforeWritten, c.token, 'still only claimed, not done, before its events are written');
    assert.ok(r.retriedDependencies.every((d) => d === 'kafka'));
    assert.equal(r.producer.sends.length, 1, 'the events are written once they can be');
    assert.equal(await redis.get(c.key), 'done');
    assert.equal(r.gate.isUp('kafka'), true);
    assert.deepEqual(r.changes, ['kafka down', 'kafka up']);
  });

  it('gives up a revoked request with DependencyError, and goes on with the rest of its group', async () => {
    const r = rig('oc-revoked');
    const [a, b] = await Promise.all(['r-a', 'r-b'].map((id) => claimed(r, id)));
    const revoke = new AbortController();
    r.producer.failing = true;
    const revoked = r.committer.commit(a as Claim, [event('r-a', 'dev-a')], {}, revoke.signal);
    const kept = r.committer.commit(b as Claim, [event('r-b', 'dev-b')], {}, never);
    await waitUntil(() => r.retriedDependencies.length >= 1, { what: 'a failed produce' });
    revoke.abort();
    await assert.rejects(revoked, (err: unknown) => {
      assert.ok(err instanceof DependencyError);
      assert.equal(err.dependency, 'kafka');
      assert.match(err.message, /scripted broker outage/);
      return true;
    });
    r.producer.failing = false;
    await kept;
    assert.deepEqual(
      r.producer.sends.map((s) => s.records.map((rec) => rec.key)),
      [['dev-b']],
      "the revoked request's events are left to the record's next owner",
    );
    assert.equal(await redis.get((a as Claim).key), (a as Claim).token, 'still claimed, not done');
    assert.equal(await redis.get((b as Claim).key), 'done');
  });

  it('produces nothing while it cannot record the outcome, and gives up only when revoked', async () => {
    // A ledger whose Redis has nothing listening: every round trip fails as an outage does.
    const port = await freePort();
    const deadRedis = createRedisClient(
      {
        PUSHLINE_REDIS_URL: `redis://127.0.0.1:${port}`,
        PUSHLINE_REDIS_CLUSTER_NODES: undefined,
        PUSHLINE_REDIS_COMMAND_TIMEOUT_MS: 1_000,
        PUSHLINE_REDIS_CONNECT_TIMEOUT_MS: 500,
        PUSHLINE_REDIS_MAX_RETRIES_PER_REQUEST: 0,
      },
      { retryStrategy: () => 50, lazyConnect: true },
    );
    // Expected errors of the unreachable Redis; the committer counts them through onRetry.
    deadRedis.on('error', () => undefined);
    cleanup.push(() => deadRedis.disconnect());
    const r = rig('oc-redis', deadRedis);
    // The claim was taken before Redis went away (it cannot be taken on this one).
    const c = r.claim('r-1');
    const revoke = new AbortController();
    cleanup.push(() => revoke.abort());
    const committed = r.committer.commit(c, [event('r-1', 'dev-1')], {}, revoke.signal);
    await waitUntil(() => r.retriedDependencies.filter((d) => d === 'redis').length >= 2, {
      what: 'two failed round trips to Redis',
    });
    assert.equal(r.gate.isUp('redis'), false);
    assert.equal(r.gate.isUp('kafka'), true);
    revoke.abort();
    await assert.rejects(
      committed,
      (err: unknown) => err instanceof DependencyError && err.dependency === 'redis',
    );
    // An outcome published without its record would be published again by the next holder.
    assert.equal(r.producer.attempts, 0, 'nothing produced before the outcome was recorded');
    assert.ok(!r.retriedDependencies.includes('kafka'));
  });

  it('retries marking done without producing again, and gives up only when revoked', async () => {
    // The ledger's own connection, closed while the produce is in flight: marking done fails
    // as it does when Redis goes away between the two steps.
    const ledgerRedis = testRedis({ maxRetriesPerRequest: 0 });
    ledgerRedis.on('error', () => undefined);
    cleanup.push(() => ledgerRedis.disconnect());
    const r = rig('oc-redis-done', ledgerRedis);
    const c = await claimed(r, 'r-1');
    let release = () => {};
    r.producer.hold = new Promise<void>((resolve) => (release = resolve));
    const revoke = new AbortController();
    cleanup.push(() => revoke.abort());
    const committed = r.committer.commit(c, [event('r-1', 'dev-1')], {}, revoke.signal);
    await waitUntil(() => r.producer.attempts === 1, { what: 'the produce in flight' });
    ledgerRedis.disconnect();
    release();
    await waitUntil(() => r.retriedDependencies.filter((d) => d === 'redis').length >= 2, {
      what: 'two failed attempts to mark the request done',
    });
    revoke.abort();
    await assert.rejects(
      committed,
      (err: unknown) => err instanceof DependencyError && err.dependency === 'redis',
    );
    assert.equal(r.producer.sends.length, 1, 'the events were written once, not once per Redis retry');
    assert.ok(!r.retriedDependencies.includes('kafka'));
    // What the next holder finds: the recorded outcome, not a done mark.
    assert.notEqual(await redis.get(c.key), 'done');
    assert.equal(await redis.exists(c.outcomeKey), 1);
  });

  it('commits again after a failed group, for requests that come later', async () => {
    const r = rig('oc-after');
    const first = await claimed(r, 'r-1');
    r.producer.failing = true;
    const one = r.committer.commit(first, [event('r-1', 'dev-1')], {}, never);
    await waitUntil(() => r.retriedDependencies.length >= 1, { what: 'a failed produce' });
    r.producer.failing = false;
    await one;
    const second = await claimed(r, 'r-2');
    await r.committer.commit(second, [event('r-2', 'dev-2')], {}, never);
    assert.deepEqual(
      r.producer.sends.map((s) => s.records.map((rec) => rec.key)),
      [['dev-1'], ['dev-2']],
    );
  });
});
