import assert from 'node:assert/strict';
import { after, afterEach, before, test } from 'node:test';
import { startKafka, type KafkaInstance } from '@pushline/devstack';
import {
  ProduceError,
  SendWithdrawnError,
  createKafkaClient,
  type KafkaClient,
  type OutgoingRecord,
} from '@pushline/kafka';
import { backoffMs } from '@pushline/runtime';
import { silentLogger } from '@pushline/telemetry';
import { collectRecords, uniquePrefix, waitUntil } from '@pushline/testkit';

/**
 * The Kafka client against a broker of its own that the tests stop (SIGSTOP), kill -9 and start
 * again: what the platform's producers and consumers do when the broker fails under them.
 */

let broker: KafkaInstance;
let stopped = false;
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  broker = await startKafka();
});

after(async () => {
  await broker?.stop();
});

afterEach(async () => {
  resumeBroker();
  for (const c of cleanups.splice(0).reverse()) await c();
});

function stopBroker(): void {
  process.kill(broker.pid, 'SIGSTOP');
  stopped = true;
}

function resumeBroker(): void {
  if (stopped) process.kill(broker.pid, 'SIGCONT');
  stopped = false;
}

function client(name: string, extra: { requestTimeoutMs?: number; retries?: number } = {}): KafkaClient {
  return createKafkaClient({ brokers: broker.brokers, clientId: name, logger: silentLogger(), ...extra });
}

/** A new topic, created by a client with the default request timeout (a short one is the test's subject). */
async function freshTopic(partitions: number): Promise<string> {
  const topic = `${uniquePrefix('faults')}.records`;
  const admin = client('faults-admin').admin();
  try {
    await admin.ensureTopics([{ name: topic, partitions }]);
  } finally {
    await admin.close();
  }
  return topic;
}

/** The offset the next record of the topic gets, summed over its partitions. */
async function topicEnd(topic: string): Promise<number> {
  const admin = client('faults-admin').admin();
  try {
    const partitions = await admin.groupLagByPartition(`no-group-${topic}`, topic);
    return partitions.reduce((sum, p) => sum + p.end, 0);
  } finally {
    await admin.close();
  }
}

const records = (...values: string[]): OutgoingRecord[] => values.map((value) => ({ key: 'k', value }));

// A broker restart takes 20-45 s on a loaded machine, on top of the waits below: more than the suite's default.
test(
  'a produce that failed while the broker was stopped cannot swallow or block the sends after it',
  { timeout: 240_000 },
  async () => {
    // Short request timeout: the produce to the stopped broker fails within seconds.
    const kafka = client('faults-stop', { requestTimeoutMs: 1000 });
    const topic = await freshTopic(1);
    const producer = kafka.producer();
    cleanups.push(() => producer.close());
    await producer.start();
    await producer.send(topic, records('warm-up'));

    stopBroker();
    await assert.rejects(producer.send(topic, records('a1', 'a2', 'a3')), ProduceError);
    resumeBroker();
    // The broker now reads the produce requests it never answered, and writes batch a: the
    // failed send's outcome was unknown, and here it turned out written.
    await waitUntil(async () => (await topicEnd(topic).catch(() => 0)) >= 4, {
      timeoutMs: 30_000,
      what: 'the unanswered batch written once the broker runs again',
    });

    // The same record count as the written batch: with its numbering reused, the broker would
    // take it for a duplicate of a and drop it while the send reports success.
    await producer.send(topic, records('b1', 'b2', 'b3'));
    // Another count: with the numbering behind the broker's, every later produce would be refused
    // with OUT_OF_ORDER_SEQUENCE_NUMBER.
    await producer.send(topic, records('c1', 'c2'));
    await producer.send(topic, records('d1'));

    const seen = await collectRecords(kafka, topic, 10, { timeoutMs: 30_000 }).catch((err: unknown) =>
      assert.fail(`records missing from the topic: ${String(err)}`),
    );
    const values = seen.map((r) => r.value?.toString('utf8'));
    assert.deepEqual(
      values.filter((v) => !v?.startsWith('a')),
      ['warm-up', 'b1', 'b2', 'b3', 'c1', 'c2', 'd1'],
      'every acknowledged send is on the topic, in order',
    );
    assert.deepEqual(
      values.filter((v) => v?.startsWith('a')),
      ['a1', 'a2', 'a3'],
      'the unanswered batch is there once (its retries were recognised as duplicates)',
    );
  },
);

test(
  'after a kill -9 and restart of the broker, every acknowledged send is on the topic and sends succeed again',
  { timeout: 240_000 },
  async () => {
    // A small retry budget: sends fail while the broker restarts instead of outlasting it, as they
    // do in a service when the outage is longer than the budget.
    const kafka = client('faults-kill', { requestTimeoutMs: 3000, retries: 2 });
    const topic = await freshTopic(4);
    const producer = kafka.producer();
    cleanups.push(() => producer.close());
    await producer.start();

    // Concurrent senders, as push-api's request handlers are: several produces overlap the kill.
    const acked: string[] = [];
    let ackedAfterRestart = 0;
    let restarted = false;
    let failures = 0;
    let running = true;
    let next = 0;
    const senders = Array.from({ length: 8 }, async (_, sender) => {
      let attempt = 0;
      while (running) {
        const batch = Array.from({ length: 1 + (next % 3) }, () => `r${next++}`);
        try {
          await producer.send(
            topic,
            batch.map((value, i) => ({ key: `k${(sender + i) % 6}`, value })),
          );
          acked.push(...batch);
          if (restarted) ackedAfterRestart += batch.length;
          attempt = 0;
        } catch (err) {
          assert.ok(err instanceof ProduceError, `a failed send is a ProduceError: ${String(err)}`);
          failures++;
          // Paces the retries of a sender while the broker is down (not a synchronisation).
          await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt++, 50, 1000)));
        }
      }
    });
    cleanups.push(async () => {
      running = false;
      await Promise.allSettled(senders);
    });

    await waitUntil(() => acked.length >= 100, {
      timeoutMs: 30_000,
      what: 'sends acknowledged before the kill',
    });
    await broker.kill();
    await broker.restart();
    restarted = true;
    // Without a new producer id after the failed sends, every produce is refused from here on
    // (OUT_OF_ORDER_SEQUENCE_NUMBER) or silently dropped as a duplicate.
    await waitUntil(() => ackedAfterRestart >= 100, {
      timeoutMs: 60_000,
      what: 'sends acknowledged after the broker restarted',
    });
    running = false;
    await Promise.all(senders);
    assert.ok(failures > 0, 'the kill made some sends fail (the fault happened under traffic)');

    // The group coordinator may still be loading after the restart: asked until it answers.
    const end = await waitUntil(() => topicEnd(topic).catch(() => undefined), {
      timeoutMs: 30_000,
      what: 'the topic end offsets',
    });
    const seen = await collectRecords(kafka, topic, end, { timeoutMs: 30_000 });
    const onTopic = new Set(seen.map((r) => r.value?.toString('utf8')));
    const lost = acked.filter((value) => !onTopic.has(value));
    assert.deepEqual(lost.slice(0, 20), [], `${lost.length} of ${acked.length} acknowledged records missing`);
  },
);

test(
  'a send withdrawn while it waits behind one the stopped broker holds is never written',
  { timeout: 240_000 },
  async () => {
    const kafka = client('faults-withdraw');
    const topic = await freshTopic(1);
    const producer = kafka.producer();
    cleanups.push(() => producer.close());
    await producer.start();
    await producer.send(topic, records('warm-up'));

    stopBroker();
    // In flight to the stopped broker: the next send waits for it.
    const held = producer.send(topic, records('held'));
    const withdraw = new AbortController();
    const queued = producer.send(topic, records('withdrawn'), { signal: withdraw.signal });
    withdraw.abort();
    await assert.rejects(queued, SendWithdrawnError);
    resumeBroker();
    await held;
    await producer.send(topic, records('after'));

    // One partition, sends in order: a withdrawn record written after all would sit before `after`.
    const seen = await collectRecords(kafka, topic, 3, { timeoutMs: 30_000 });
    assert.deepEqual(
      seen.map((r) => r.value?.toString('utf8')),
      ['warm-up', 'held', 'after'],
    );
  },
);
