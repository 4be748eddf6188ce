import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import {
  createKafkaClient,
  serviceKafkaClient,
  type ConsumerOptions,
  type KafkaClient,
} from '@pushline/kafka';
import { silentLogger } from '@pushline/telemetry';
import { nextFetchWait, testInfra, testKafkaClient, uniquePrefix } from '@pushline/testkit';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A one-partition topic and a consumer on it; `handled` resolves (with the time) at its first record. */
async function topicWithConsumer(
  kafka: KafkaClient,
  name: string,
  options: Partial<ConsumerOptions> = {},
): Promise<{ topic: string; handled: Promise<number> }> {
  const topic = `${uniquePrefix(name)}.records`;
  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  await admin.ensureTopics([{ name: topic, partitions: 1 }]);
  let seen!: (at: number) => void;
  const handled = new Promise<number>((resolve) => (seen = resolve));
  const consumer = kafka.consumer({
    groupId: `${topic}.group`,
    topics: [topic],
    fromBeginning: true,
    handleBatch: async (batch) => {
      if (batch.records.length > 0) seen(performance.now());
    },
    ...options,
  });
  cleanups.push(() => consumer.close());
  return { topic, handled: consumer.start().then(() => handled) };
}

test('an idle consumer asks the broker to hold each fetch 500 ms (the Java client’s default), not 100 ms', async () => {
  const { topic } = await topicWithConsumer(testKafkaClient('fetch-wait-default'), 'fetch-default');
  assert.equal(await nextFetchWait(topic), 500);
});

test('the client’s fetch wait applies to its consumers, and a consumer’s own overrides it', async () => {
  const kafka = createKafkaClient({
    brokers: testInfra().kafkaBrokers,
    clientId: 'fetch-wait-configured',
    logger: silentLogger(),
    fetchWaitMs: 250,
  });
  const fromClient = await topicWithConsumer(kafka, 'fetch-client');
  const fromConsumer = await topicWithConsumer(kafka, 'fetch-consumer', { fetchWaitMs: 40 });
  const [clientWait, consumerWait] = await Promise.all([
    nextFetchWait(fromClient.topic),
    nextFetchWait(fromConsumer.topic),
  ]);
  assert.equal(clientWait, 250);
  assert.equal(consumerWait, 40);
});

test('a service’s PUSHLINE_KAFKA_FETCH_WAIT_MS sets the wait of its consumers', async () => {
  const kafka = serviceKafkaClient(
    {
      PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers,
      PUSHLINE_KAFKA_CLIENT_ID: 'fetch-wait-service',
      PUSHLINE_KAFKA_FETCH_WAIT_MS: 300,
    },
    'test',
    silentLogger(),
  );
  const { topic } = await topicWithConsumer(kafka, 'fetch-service');
  assert.equal(await nextFetchWait(topic), 300);
});

test('a record that arrives while a fetch waits is handled without waiting out the fetch', async () => {
  const kafka = testKafkaClient('fetch-wait-record');
  const fetchWaitMs = 3000;
  const { topic, handled } = await topicWithConsumer(kafka, 'fetch-record', { fetchWaitMs });
  // The next fetch of the topic is the one a record sent now lands in (or, if the record is
  // faster, the one that finds it at once): either way the broker must not hold it to the end.
  const fetching = nextFetchWait(topic);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  assert.equal(await fetching, fetchWaitMs);
  const sentAt = performance.now();
  await producer.send(topic, [{ key: 'k', value: 'v' }]);
  const handledAt = await handled;
  assert.ok(
    handledAt - sentAt < fetchWaitMs,
    `handled ${Math.round(handledAt - sentAt)} ms after it was sent: the broker held the fetch to its end`,
  );
});
