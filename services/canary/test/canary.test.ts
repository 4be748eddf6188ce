import assert from 'node:assert/strict';
import { after, afterEach, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { Canary, CanaryMetrics } from '@pushline/canary';
import { freePort } from '@pushline/devstack';
import type { KafkaClient } from '@pushline/kafka';
import { RedisDeviceRegistry, type ServerLoad } from '@pushline/registry';
import {
  createMetricsRegistry,
  parsePrometheusText,
  silentLogger,
  sumSamples,
  trace,
  type Registry,
} from '@pushline/telemetry';
import { testInfra, testKafkaClient, testSecret, uniquePrefix, waitUntil } from '@pushline/testkit';

/**
 * The canary against a real Redis registry and a real Kafka broker, with connection servers that
 * exist only as load reports (their URLs lead nowhere): which servers it probes, and for how long,
 * and the consumer lag it reads from the broker. Probing real devices is covered by
 * test/observability/live-prometheus.test.ts.
 */

let redis: Redis;
let kafka: KafkaClient;
let closedUrl: string;
/** An existing topic for the discovery tests' lag reads (kafkajs retries a read of a missing one for long). */
let lagTopic: string;
const running: { canary: Canary; admin: ReturnType<KafkaClient['admin']> }[] = [];

before(async () => {
  redis = new Redis(testInfra().redisUrl);
  kafka = testKafkaClient('canary-test');
  // A port nobody listens on: every probe and every device connect fails at once.
  closedUrl = `http://127.0.0.1:${await freePort()}`;
  lagTopic = `${uniquePrefix('canary')}.push-requests`;
  const admin = kafka.admin();
  try {
    await admin.ensureTopics([{ name: lagTopic, partitions: 1 }]);
  } finally {
    await admin.close();
  }
});
afterEach(async () => {
  await Promise.all(running.splice(0).map(({ canary, admin }) => canary.close().then(() => admin.close())));
});
after(async () => {
  await redis.quit();
});

function load(serverId: string, draining = false): ServerLoad {
  return {
    serverId,
    serverUrl: closedUrl,
    deviceUrl: closedUrl,
    directUrl: closedUrl,
    connections: 0,
    eventLoopDelayMs: 0,
    rssBytes: 0,
    heapUsedBytes: 0,
    draining,
    at: Date.now(),
  };
}

function startCanary(
  registry: RedisDeviceRegistry,
  options: { forgetAfterMs?: number; lag?: { group: string; topic: string } } = {},
): { canary: Canary; metrics: Registry; admin: ReturnType<KafkaClient['admin']> } {
  const metrics = createMetricsRegistry({ service: 'canary' }, false);
  const admin = kafka.admin();
  const canary = new Canary({
    registry,
    admin,
    apiUrl: closedUrl,
    apiKey: 'k-canary-test-key-0000',
    jwt: { secret: testSecret() },
    lag: options.lag ?? { group: 'canary-test', topic: lagTopic },
    devicePrefix: 'canary.',
    intervalMs: 100,
    timeoutMs: 500,
    forgetAfterMs: options.forgetAfterMs ?? 60_000,
    metrics: new CanaryMetrics(metrics),
    tracer: trace.getTracer('canary-test'),
    logger: silentLogger(),
  });
  running.push({ canary, admin });
  return { canary, metrics, admin };
}

const families = async (metrics: Registry) => parsePrometheusText(await metrics.metrics());

describe('canary discovery', () => {
  it('drops a draining server at once, keeps probing a crashed one (failing) until it is forgotten', async () => {
    const prefix = uniquePrefix('canary');
    const registry = new RedisDeviceRegistry({ redis, keyPrefix: `${prefix}:` });
    await registry.reportLoad(load('cs-a'), 60);
    await registry.reportLoad(load('cs-b'), 60);
    const { canary, metrics } = startCanary(registry, { forgetAfterMs: 1_500 });
    await canary.start();
    assert.deepEqual(canary.servers.map((s) => s.serverId).sort(), ['cs-a', 'cs-b']);
    const failed = async (server: string) =>
      sumSamples(await families(metrics), 'pushline_canary_probes_total', { server }) -
      sumSamples(await families(metrics), 'pushline_canary_probes_total', { server, result: 'ok' });
    await waitUntil(async () => (await failed('cs-a')) >= 2 && (await failed('cs-b')) >= 2, {
      what: 'probes through both unreachable servers to fail',
    });
    assert.equal(
      sumSamples(await families(metrics), 'pushline_canary_device_connected', { server: 'cs-a' }),
      0,
    );

    // cs-b drains (graceful shutdown): gone at once, series included.
    await registry.reportLoad(load('cs-b', true), 60);
    await waitUntil(() => !canary.servers.some((s) => s.serverId === 'cs-b'), { what: 'cs-b dropped' });
    const afterDrain = await families(metrics);
    assert.equal(
      afterDrain
        .find((f) => f.name === 'pushline_canary_probes_total')
        ?.samples.some((s) => s.labels['server'] === 'cs-b'),
      false,
    );

    // cs-a's report vanishes without a drain (a crash): still probed, still failing.
    await registry.removeLoad('cs-a');
    await waitUntil(() => canary.servers.find((s) => s.serverId === 'cs-a')?.state === 'lost', {
      what: 'cs-a marked lost',
    });
    const whenLost = await failed('cs-a');
    await waitUntil(async () => (await failed('cs-a')) > whenLost, {
      what: 'probes of the lost cs-a to go on failing',
    });
    // ... until it is forgotten.
    await waitUntil(() => canary.servers.length === 0, { timeoutMs: 10_000, what: 'cs-a forgotten' });
    assert.equal(sumSamples(await families(metrics), 'pushline_canary_probes_total'), 0);
    assert.ok(sumSamples(await families(metrics), 'pushline_loop_runs_total', { loop: 'discovery' }) > 3);
  });

  it('a lost server that reports again is probed as before', async () => {
    const prefix = uniquePrefix('canary');
    const registry = new RedisDeviceRegistry({ redis, keyPrefix: `${prefix}:` });
    await registry.reportLoad(load('cs-c'), 60);
    const { canary } = startCanary(registry);
    await canary.start();
    await registry.removeLoad('cs-c');
    await waitUntil(() => canary.servers[0]?.state === 'lost', { what: 'cs-c lost' });
    await registry.reportLoad(load('cs-c'), 60);
    await waitUntil(() => canary.servers[0]?.state === 'active', { what: 'cs-c active again' });
  });
});

describe('canary consumer lag', () => {
  it('reads each partition’s lag of a group from the broker, with no member running', async () => {
    const prefix = uniquePrefix('canary-lag');
    const topic = `${prefix}.push-requests`;
    const admin = kafka.admin();
    const producer = kafka.producer();
    try {
      await admin.ensureTopics([{ name: topic, partitions: 2 }]);
      await producer.start();
      await producer.send(topic, [
        { key: 'a', value: '1' },
        { key: 'b', value: '2' },
        { key: 'c', value: '3' },
      ]);
    } finally {
      await producer.close();
      await admin.close();
    }
    const registry = new RedisDeviceRegistry({ redis, keyPrefix: `${prefix}:` });
    const { canary, metrics } = startCanary(registry, { lag: { group: `${prefix}-group`, topic } });
    await canary.start();
    await waitUntil(
      async () => sumSamples(await families(metrics), 'pushline_consumer_group_lag', { topic }) === 3,
      {
        what: 'a lag of 3 records',
      },
    );
    const partitions = (await families(metrics))
      .find((f) => f.name === 'pushline_consumer_group_lag')
      ?.samples.map((s) => s.labels['partition'])
      .sort();
    assert.deepEqual(partitions, ['0', '1']);
  });
});
