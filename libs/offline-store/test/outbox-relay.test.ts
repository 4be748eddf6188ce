import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startKafka, type KafkaInstance } from '@pushline/devstack';
import { createKafkaClient, type KafkaClient, type Producer } from '@pushline/kafka';
import { DeliveryEvent, type StoredMessage } from '@pushline/protocol';
import { createMetricsRegistry, silentLogger, type Registry } from '@pushline/telemetry';
import {
  collectRecords,
  recordJson,
  testKafkaClient,
  testRedis,
  uniquePrefix,
  waitUntil,
} from '@pushline/testkit';
import { OutboxRelay, RedisOfflineStore, offlineKeys, offlinePartitions } from '@pushline/offline-store';
import { sendAll, type RedisClient } from '@pushline/registry';

/** The relay's Kafka side: produce the events, keyed by device, as the services do. */
function publishTo(producer: Producer, topic: string) {
  return (events: readonly DeliveryEvent[]) =>
    producer.send(
      topic,
      events.map((ev) => ({ key: ev.deviceId ?? ev.target.id, value: JSON.stringify(ev) })),
    );
}

function stored(requestId: string, deviceId: string, overrides: Partial<StoredMessage> = {}): StoredMessage {
  const now = Date.now();
  return {
    v: 1,
    requestId,
    target: { type: 'device', id: deviceId },
    payload: { requestId },
    createdAt: now,
    expiresAt: now + 60_000,
    attempts: 1,
    ...overrides,
  };
}

async function counted(metrics: Registry, name: string): Promise<number> {
  const metric = await metrics.getSingleMetric(name)?.get();
  return metric?.values.reduce((n, v) => n + v.value, 0) ?? 0;
}

describe('OutboxRelay when Kafka dies (kill -9 of a private broker)', () => {
  let kafka: KafkaInstance;
  let deadClient: KafkaClient;
  let liveClient: KafkaClient;
  let redis: RedisClient;
  /** Entries in every partition's outbox. */
  const outboxLength = async () => {
    const keys = offlineKeys(prefix, offlinePartitions(redis, undefined));
    const lengths = await sendAll(
      redis,
      Array.from({ length: keys.partitions }, (_, p) => ['xlen', keys.outbox(p)] as const),
    );
    return lengths.reduce<number>((sum, n) => sum + Number(n), 0);
  };
  const closing: (() => Promise<void>)[] = [];
  const prefix = `${uniquePrefix('outbox')}:`;
  const topic = `${uniquePrefix('outbox')}.delivery-events`;

  before(async () => {
    kafka = await startKafka();
    deadClient = createKafkaClient({
      brokers: kafka.brokers,
      clientId: 'relay-dead',
      logger: silentLogger(),
    });
    liveClient = testKafkaClient('relay-live');
    for (const client of [deadClient, liveClient]) {
      const admin = client.admin();
      try {
        await admin.ensureTopics([{ name: topic, partitions: 1 }]);
      } finally {
        await admin.close();
      }
    }
    redis = testRedis();
  });
  after(async () => {
    for (const close of closing.reverse()) await close();
    await redis.quit();
    await kafka.stop();
  });

  it('keeps the outcomes of an eviction, an expiry and a drain, and a relay publishes each once after', async () => {
    const deadProducer = deadClient.producer();
    await deadProducer.start();
    closing.push(() => deadProducer.close());
    const firstMetrics = createMetricsRegistry({}, false);
    const first = new OutboxRelay({
      redis,
      keyPrefix: prefix,
      consumer: 'relay-1',
      publish: publishTo(deadProducer, topic),
      logger: silentLogger(),
      metrics: firstMetrics,
      claimIdleMs: 500,
      publishTimeoutMs: 1_000,
      closeTimeoutMs: 1_000,
    });
    closing.push(() => first.close());
    const store = new RedisOfflineStore({
      redis,
      keyPrefix: prefix,
      maxPerDevice: 1,
      logger: silentLogger(),
      onOutbox: () => first.kick(),
    });
    await first.start();

    process.kill(kafka.pid, 'SIGKILL');
    // Every state change succeeds in Redis while Kafka is gone, its outcome written with it.
    await store.store('dev-1', stored('evicted', 'dev-1'));
    assert.deepEqual(await store.store('dev-1', stored('delivered', 'dev-1')), { stored: true, evicted: 1 });
    await store.store('dev-2', stored('expired', 'dev-2', { expiresAt: Date.now() + 5 }));
    assert.equal(await store.sweepExpired(Date.now() + 10), 1);
    await store.drain('dev-1', async () => ({ outcome: 'delivered', latencyMs: 1 }));
    assert.equal(await outboxLength(), 3);
    // The first relay fails to publish, counts it, and keeps what it holds; then its process goes.
    await waitUntil(() => counted(firstMetrics, 'pushline_offline_outbox_failures_total'), {
      timeoutMs: 30_000,
      what: 'a failed publish counted',
    });
    await first.close();
    assert.equal(await counted(firstMetrics, 'pushline_offline_outbox_published_total'), 0);
    assert.equal(await outboxLength(), 3);

    // A relay with a working Kafka (the restarted service's) takes the abandoned entries over.
    const liveProducer = liveClient.producer();
    await liveProducer.start();
    closing.push(() => liveProducer.close());
    const secondMetrics = createMetricsRegistry({}, false);
    const second = new OutboxRelay({
      redis,
      keyPrefix: prefix,
      consumer: 'relay-2',
      publish: publishTo(liveProducer, topic),
      logger: silentLogger(),
      metrics: secondMetrics,
      claimIdleMs: 500,
    });
    closing.push(() => second.close());
    await second.start();
    const records = await collectRecords(liveClient, topic, 3, { timeoutMs: 30_000 });
    const events = records.map((r) => DeliveryEvent.parse(recordJson(r)));
    assert.deepEqual(
      events.map((e) => [e.requestId, e.deviceId, e.outcome, e.reason ?? '', e.source, e.terminal]).sort(),
      [
        ['delivered', 'dev-1', 'delivered', '', 'offline', true],
        ['evicted', 'dev-1', 'expired', 'evicted', 'offline', true],
        ['expired', 'dev-2', 'expired', 'ttl_elapsed', 'offline', true],
      ],
    );
    await waitUntil(async () => (await outboxLength()) === 0, {
      what: 'the outbox emptied',
    });
    assert.ok((await counted(secondMetrics, 'pushline_offline_outbox_claimed_total')) >= 1);
    assert.equal(await counted(secondMetrics, 'pushline_offline_outbox_published_total'), 3);
  });
});
