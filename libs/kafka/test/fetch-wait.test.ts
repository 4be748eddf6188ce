import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { afterEach, test } from 'node:test';
import { createKafkaClient, type ConsumerOptions, type KafkaClient } from '@pushline/kafka';
import { silentLogger } from '@pushline/telemetry';
import { testInfra, testKafkaClient, uniquePrefix } from '@pushline/testkit';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** What the test reads of one fetch request kafkajs sends. */
interface FetchArgs {
  readonly maxWaitTime: number;
  readonly topics: readonly { readonly topic: string }[];
}

/**
 * Calls `onFetch` with the arguments of every fetch request any kafkajs broker connection sends
 * from now on (until the test ends).
 */
function watchFetches(onFetch: (args: FetchArgs) => void): void {
  const require = createRequire(import.meta.url);
  const Broker = require('kafkajs/src/broker/index.js') as {
    prototype: { fetch(this: unknown, args: FetchArgs): Promise<unknown> };
  };
  const fetch = Broker.prototype.fetch;
  Broker.prototype.fetch = function (this: unknown, args: FetchArgs) {
    onFetch(args);
    return fetch.call(this, args);
  };
  cleanups.push(async () => {
    Broker.prototype.fetch = fetch;
  });
}

/** The `maxWaitTime` of the first fetch that asks for `topic`. */
function firstFetchWait(topic: string): Promise<number> {
  return new Promise((resolve) => {
    watchFetches((args) => {
      if (args.topics.some((t) => t.topic === topic)) resolve(args.maxWaitTime);
    });
  });
}

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
  const kafka = testKafkaClient('fetch-wait-default');
  const topic = `${uniquePrefix('fetch-default')}.records`;
  const waited = firstFetchWait(topic);
  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  await admin.ensureTopics([{ name: topic, partitions: 1 }]);
  const consumer = kafka.consumer({
    groupId: `${topic}.group`,
    topics: [topic],
    fromBeginning: true,
    handleBatch: async () => {},
  });
  cleanups.push(() => consumer.close());
  await consumer.start();
  assert.equal(await waited, 500);
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
    firstFetchWait(fromClient.topic),
    firstFetchWait(fromConsumer.topic),
  ]);
  assert.equal(clientWait, 250);
  assert.equal(consumerWait, 40);
});

test('a record that arrives while a fetch waits is handled without waiting out the fetch', async () => {
  const kafka = testKafkaClient('fetch-wait-record');
  const fetchWaitMs = 3000;
  const { topic, handled } = await topicWithConsumer(kafka, 'fetch-record', { fetchWaitMs });
  // The next fetch of the topic is the one a record sent now lands in (or, if the record is
  // faster, the one that finds it at once): either way the broker must not hold it to the end.
  const fetching = firstFetchWait(topic);
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
