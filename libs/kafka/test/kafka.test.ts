import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { Kafka, logLevel, type ConfigResourceTypes } from 'kafkajs';
import {
  BufferedPublisher,
  ProduceError,
  UnderReplicatedTopicsError,
  createKafkaClient,
  ensurePlatformTopics,
  replicationPlan,
  type Admin,
  type IncomingRecord,
  type KafkaClient,
} from '@pushline/kafka';
import { createLogger, silentLogger } from '@pushline/telemetry';
import {
  collectRecords,
  testInfra,
  testKafkaClient,
  uniquePrefix,
  waitUntil,
  within,
} from '@pushline/testkit';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function freshTopic(kafka: KafkaClient, partitions = 3): Promise<string> {
  const topic = `${uniquePrefix('kafka')}.records`;
  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  await admin.ensureTopics([{ name: topic, partitions }]);
  return topic;
}

test('ensureTopics creates missing topics and leaves existing ones alone', async () => {
  const kafka = testKafkaClient();
  const topic = await freshTopic(kafka);
  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  await admin.ensureTopics([{ name: topic, partitions: 3 }]);
  assert.ok((await admin.listTopics()).includes(topic));
});

test('replication: min(3, brokers) replicas and min.insync.replicas min(2, brokers)', () => {
  assert.deepEqual(replicationPlan(1), {
    create: { replicationFactor: 1, minInsyncReplicas: 1 },
    require: { replicationFactor: 1, minInsyncReplicas: 1 },
  });
  assert.deepEqual(replicationPlan(2).create, { replicationFactor: 2, minInsyncReplicas: 2 });
  assert.deepEqual(replicationPlan(5), {
    create: { replicationFactor: 3, minInsyncReplicas: 2 },
    require: { replicationFactor: 3, minInsyncReplicas: 2 },
  });
  assert.deepEqual(replicationPlan(5, 2).require, { replicationFactor: 2, minInsyncReplicas: 2 });
  assert.deepEqual(replicationPlan(1, 1).require, { replicationFactor: 1, minInsyncReplicas: 1 });
});

test('ensureTopics sets min.insync.replicas, and checks existing topics against the minimum', async () => {
  const raw = new Kafka({ brokers: testInfra().kafkaBrokers, logLevel: logLevel.NOTHING });
  const rawAdmin = raw.admin();
  await rawAdmin.connect();
  cleanups.push(() => rawAdmin.disconnect());
  const brokers = (await rawAdmin.describeCluster()).brokers.length;
  const plan = replicationPlan(brokers);

  const topic = await freshTopic(testKafkaClient());
  const metadata = await rawAdmin.fetchTopicMetadata({ topics: [topic] });
  for (const p of metadata.topics[0]?.partitions ?? [])
    assert.equal(p.replicas.length, plan.create.replicationFactor);
  const configs = await rawAdmin.describeConfigs({
    includeSynonyms: false,
    // ConfigResourceTypes.TOPIC (not a detectable named export of the CommonJS module).
    resources: [{ type: 2 as ConfigResourceTypes, name: topic, configNames: ['min.insync.replicas'] }],
  });
  assert.equal(
    configs.resources[0]?.configEntries.find((e) => e.configName === 'min.insync.replicas')?.configValue,
    String(plan.create.minInsyncReplicas),
  );

  // An existing topic below a configured minimum: refused, or warned about.
  const clientWith = (onUnderReplicated: 'warn' | 'refuse', lines: string[] = []) =>
    createKafkaClient({
      brokers: testInfra().kafkaBrokers,
      clientId: 'replication-check',
      logger: createLogger({
        service: 'test',
        level: 'warn',
        destination: { write: (line: string) => void lines.push(line) },
      }),
      replication: { minReplicationFactor: brokers + 1, onUnderReplicated },
    });
  const refusing = clientWith('refuse').admin();
  cleanups.push(() => refusing.close());
  await assert.rejects(refusing.ensureTopics([{ name: topic, partitions: 3 }]), (err: unknown) => {
    assert.ok(err instanceof UnderReplicatedTopicsError);
    assert.deepEqual(err.problems, [
      {
        topic,
        replicationFactor: plan.create.replicationFactor,
        minInsyncReplicas: plan.create.minInsyncReplicas,
      },
    ]);
    return true;
  });
  const lines: string[] = [];
  const warning = clientWith('warn', lines).admin();
  cleanups.push(() => warning.close());
  await warning.ensureTopics([{ name: topic, partitions: 3 }]);
  assert.ok(
    lines.some((l) => l.includes(topic) && l.includes('replication factor')),
    'the warning names the topic',
  );
});

/** `kafka`, counting the admins it hands out and the ones closed again. */
function countingAdmins(kafka: KafkaClient): {
  kafka: Pick<KafkaClient, 'admin'>;
  opened: number;
  closed: number;
} {
  const counts = {
    opened: 0,
    closed: 0,
    kafka: {
      admin: (): Admin => {
        const admin = kafka.admin();
        counts.opened++;
        return {
          ensureTopics: (specs, timeoutMs) => admin.ensureTopics(specs, timeoutMs),
          listTopics: () => admin.listTopics(),
          groupLag: (groupId, topic) => admin.groupLag(groupId, topic),
          groupLagByPartition: (groupId, topic) => admin.groupLagByPartition(groupId, topic),
          recordsSince: (...args) => admin.recordsSince(...args),
          close: async () => {
            counts.closed++;
            await admin.close();
          },
        };
      },
    },
  };
  return counts;
}

test('ensurePlatformTopics creates the four platform topics, the DLQ with at most 3 partitions, and closes its admin', async () => {
  const raw = new Kafka({ brokers: testInfra().kafkaBrokers, logLevel: logLevel.NOTHING });
  const rawAdmin = raw.admin();
  await rawAdmin.connect();
  cleanups.push(() => rawAdmin.disconnect());
  const prefix = `${uniquePrefix('platform-topics')}.`;
  const names = {
    connectionEvents: `${prefix}connection-events`,
    pushRequests: `${prefix}push-requests`,
    pushRequestsDlq: `${prefix}push-requests.dlq`,
    deliveryEvents: `${prefix}delivery-events`,
  };
  const client = countingAdmins(testKafkaClient());
  await ensurePlatformTopics(client.kafka, names, 5);
  // Existing topics are left as they are, whatever the partitions asked for now.
  await ensurePlatformTopics(client.kafka, names, 7);
  assert.deepEqual({ opened: client.opened, closed: client.closed }, { opened: 2, closed: 2 });

  const { topics } = await rawAdmin.fetchTopicMetadata({ topics: Object.values(names) });
  const partitions = Object.fromEntries(topics.map((t) => [t.name, t.partitions.length]));
  assert.deepEqual(partitions, {
    [names.connectionEvents]: 5,
    [names.pushRequests]: 5,
    [names.pushRequestsDlq]: 3,
    [names.deliveryEvents]: 5,
  });
  const configs = await rawAdmin.describeConfigs({
    includeSynonyms: false,
    resources: [
      { type: 2 as ConfigResourceTypes, name: names.pushRequestsDlq, configNames: ['retention.ms'] },
    ],
  });
  assert.equal(
    configs.resources[0]?.configEntries.find((e) => e.configName === 'retention.ms')?.configValue,
    String(14 * 24 * 3600 * 1000),
  );

  // A refused replication check still closes the admin.
  const brokers = (await rawAdmin.describeCluster()).brokers.length;
  const refusing = countingAdmins(
    createKafkaClient({
      brokers: testInfra().kafkaBrokers,
      clientId: 'platform-topics-refused',
      logger: silentLogger(),
      replication: { minReplicationFactor: brokers + 1, onUnderReplicated: 'refuse' },
    }),
  );
  await assert.rejects(ensurePlatformTopics(refusing.kafka, names, 5), UnderReplicatedTopicsError);
  assert.deepEqual({ opened: refusing.opened, closed: refusing.closed }, { opened: 1, closed: 1 });
});

test('records keep key, value and headers, and order holds per key', async () => {
  const kafka = testKafkaClient();
  const topic = await freshTopic(kafka);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  const records = Array.from({ length: 30 }, (_, i) => ({
    key: `k${i % 3}`,
    value: JSON.stringify({ i }),
    headers: { traceparent: `00-${'a'.repeat(32)}-${'b'.repeat(16)}-01`, n: String(i) },
  }));
  await producer.send(topic, records);

  const seen = await collectRecords(kafka, topic, 30);
  for (const key of ['k0', 'k1', 'k2']) {
    const order = seen
      .filter((r) => r.key === key)
      .map((r) => (JSON.parse(String(r.value)) as { i: number }).i);
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
      `order of ${key}`,
    );
    assert.equal(order.length, 10);
  }
  assert.equal(seen[0]?.headers['traceparent'], records[0]?.headers.traceparent);
});

test('a tombstone stays a null value, and a refused send rejects with ProduceError', async () => {
  const kafka = testKafkaClient();
  const topic = await freshTopic(kafka, 1);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  await producer.send(topic, [
    { key: 'gone', value: null },
    { key: 'empty', value: '' },
  ]);
  const [tombstone, empty] = await collectRecords(kafka, topic, 2);
  assert.equal(tombstone?.value, null);
  assert.equal(empty?.value?.length, 0);
  // Larger than the broker's message.max.bytes (1 MiB by default): refused, not retried.
  await assert.rejects(
    producer.send(topic, [{ key: 'huge', value: Buffer.alloc(2 * 1024 * 1024) }]),
    (err: unknown) => err instanceof ProduceError && err.topic === topic && err.records === 1,
  );
});

test('a batch that throws is redelivered, and its offsets are not committed before it succeeds', async () => {
  const kafka = testKafkaClient();
  const topic = await freshTopic(kafka, 1);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  await producer.send(topic, [{ key: 'a', value: 'first' }]);

  const groupId = `${topic}.group`;
  let attempts = 0;
  let done!: (records: readonly IncomingRecord[]) => void;
  const handled = new Promise<readonly IncomingRecord[]>((resolve) => (done = resolve));
  const consumer = kafka.consumer({
    groupId,
    topics: [topic],
    fromBeginning: true,
    handleBatch: async (batch) => {
      attempts++;
      if (attempts === 1) throw new Error('transient failure');
      done(batch.records);
    },
  });
  cleanups.push(() => consumer.close());
  assert.equal(consumer.joined, false);
  await consumer.start();
  assert.equal(consumer.joined, true);
  const records = await within(handled, 30_000, 'the batch to be redelivered');
  assert.equal(records[0]?.value?.toString(), 'first');
  assert.ok(attempts >= 2);
  await consumer.close();
  assert.equal(consumer.joined, false);

  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  assert.equal(await admin.groupLag(groupId, topic), 0, 'committed after success');
});

test('BufferedPublisher batches in the background and flushes on close', async () => {
  const kafka = testKafkaClient();
  const topic = await freshTopic(kafka);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  let sent = 0;
  const publisher = new BufferedPublisher({
    producer,
    topic,
    logger: silentLogger(),
    maxBatch: 50,
    onSent: (n) => (sent += n),
  });
  for (let i = 0; i < 120; i++) publisher.publish({ key: `d${i}`, value: String(i) });
  await publisher.close();
  await publisher.close();
  assert.equal(sent, 120);
  assert.equal((await collectRecords(kafka, topic, 120)).length, 120);
});

test('BufferedPublisher drops the oldest record past its bound and counts it', async () => {
  const dropped: string[] = [];
  const kafka = testKafkaClient();
  const topic = await freshTopic(kafka);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  const publisher = new BufferedPublisher({
    producer,
    topic,
    logger: silentLogger(),
    maxQueued: 2,
    lingerMs: 1_000,
    onDrop: (n, reason) => dropped.push(`${n}:${reason}`),
  });
  publisher.publish({ key: null, value: 'a' });
  publisher.publish({ key: null, value: 'b' });
  publisher.publish({ key: null, value: 'c' });
  assert.deepEqual(dropped, ['1:queue_full']);
  await publisher.close();
  const seen = await collectRecords(kafka, topic, 2);
  assert.deepEqual(seen.map((r) => r.value?.toString()).sort(), ['b', 'c']);
});

test('processes racing to create the same topics all succeed once leaders exist', async () => {
  const kafka = testKafkaClient();
  const names = [1, 2, 3].map((i) => `${uniquePrefix('race')}.t${i}`);
  const admins = [kafka.admin(), kafka.admin(), kafka.admin()];
  for (const admin of admins) cleanups.push(() => admin.close());
  await Promise.all(
    admins.map((admin) => admin.ensureTopics(names.map((name) => ({ name, partitions: 4 })))),
  );

  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  await producer.send(names[0] ?? '', [{ key: 'k', value: 'v' }]);
  assert.equal((await collectRecords(kafka, names[0] ?? '', 1)).length, 1);
});

test('recordsSince reads what the log holds from a time on, to where each partition ended, and leaves no group', async () => {
  const kafka = testKafkaClient('records-since');
  const topic = await freshTopic(kafka);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  await producer.send(
    topic,
    ['old-a', 'old-b'].map((key) => ({ key, value: key })),
  );
  // Record timestamps have millisecond resolution: the later records are a millisecond on.
  const before = Date.now();
  await waitUntil(() => Date.now() > before, { what: 'the clock to move on' });
  const since = Date.now();
  const keys = Array.from({ length: 12 }, (_, i) => `new-${i}`);
  await producer.send(
    topic,
    keys.map((key) => ({ key, value: key, headers: { h: key } })),
  );

  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  const seen: IncomingRecord[] = [];
  await admin.recordsSince(topic, since, (r) => seen.push(r));
  assert.deepEqual(seen.map((r) => r.key).sort(), [...keys].sort());
  for (const r of seen) {
    assert.equal(r.value?.toString(), r.key);
    assert.deepEqual(r.headers, { h: r.key });
    assert.ok(r.timestamp >= since);
  }

  // Nothing written since: no group joins at all, the answer comes at once.
  const none: IncomingRecord[] = [];
  await admin.recordsSince(topic, Date.now() + 60_000, (r) => none.push(r));
  assert.deepEqual(none, []);

  const raw = new Kafka({ brokers: testInfra().kafkaBrokers, logLevel: logLevel.NOTHING }).admin();
  await raw.connect();
  try {
    const { groups } = await raw.listGroups();
    assert.deepEqual(
      groups.filter((g) => g.groupId.startsWith('pushline-scan-')).map((g) => g.groupId),
      [],
      'the scan deleted its group',
    );
  } finally {
    await raw.disconnect();
  }
});
