import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { AssignerProtocol, Kafka, Partitioners, logLevel, type PartitionAssigner } from 'kafkajs';
import {
  type BatchContext,
  type Consumer,
  type ConsumerOptions,
  type KafkaClient,
  type Producer,
  type RecordBatch,
} from '@pushline/kafka';
import { testInfra, testKafkaClient, uniquePrefix, waitUntil, within } from '@pushline/testkit';

const cleanups: (() => Promise<void>)[] = [];
const gates: (() => void)[] = [];
afterEach(async () => {
  // A failed assertion must not leave a handler held, or closing its consumer would wait forever.
  for (const open of gates.splice(0)) open();
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A promise the test resolves when it chooses (opened at the latest after the test). */
function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  gates.push(open);
  return { open, opened };
}

/** The first key `k<n>` that the producer's partitioner sends to `partition`. */
function keyOn(partition: number, partitions: number): string {
  const partitioner = Partitioners.DefaultPartitioner();
  const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({
    partitionErrorCode: 0,
    partitionId,
    leader: 0,
    replicas: [0],
    isr: [0],
  }));
  for (let i = 0; ; i++) {
    const key = `k${i}`;
    if (partitioner({ topic: 't', partitionMetadata, message: { key, value: null } }) === partition)
      return key;
  }
}

interface Setup {
  readonly kafka: KafkaClient;
  readonly topic: string;
  readonly groupId: string;
  readonly producer: Producer;
  lag(): Promise<number>;
  consumer(
    handleBatch: ConsumerOptions['handleBatch'],
    options?: Partial<ConsumerOptions>,
  ): Promise<Consumer>;
}

async function setup(partitions: number): Promise<Setup> {
  const kafka = testKafkaClient();
  const topic = `${uniquePrefix('consumer')}.records`;
  const groupId = `${topic}.group`;
  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  await admin.ensureTopics([{ name: topic, partitions }]);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  return {
    kafka,
    topic,
    groupId,
    producer,
    lag: () => admin.groupLag(groupId, topic),
    async consumer(handleBatch, options = {}) {
      const consumer = kafka.consumer({
        groupId,
        topics: [topic],
        fromBeginning: true,
        handleBatch,
        ...options,
      });
      cleanups.push(() => consumer.close());
      await consumer.start();
      return consumer;
    },
  };
}

const values = (batch: RecordBatch) => batch.records.map((r) => r.value?.toString() ?? '');

test('a handler held on one partition does not stop another partition’s later records', async () => {
  const s = await setup(2);
  const [key0, key1] = [keyOn(0, 2), keyOn(1, 2)];
  const held = gate();
  const startedOn0 = gate();
  const handled: string[] = [];
  let seenOn1!: () => void;
  const handledOn1 = new Promise<void>((resolve) => (seenOn1 = resolve));
  await s.consumer(async (batch) => {
    if (batch.partition === 0) {
      startedOn0.open();
      await held.opened;
    }
    handled.push(...values(batch));
    if (batch.partition === 1 && handled.includes('p1-after')) seenOn1();
  });

  await s.producer.send(s.topic, [{ key: key0, value: 'p0-first' }]);
  await within(startedOn0.opened, 20_000, 'partition 0’s handler to start');
  // Produced only now, while partition 0's handler is held.
  await s.producer.send(s.topic, [
    { key: key0, value: 'p0-behind' },
    { key: key1, value: 'p1-after' },
  ]);
  await within(handledOn1, 20_000, 'partition 1’s record while partition 0 is held');
  assert.deepEqual(handled, ['p1-after'], 'partition 0 handled nothing yet');
  assert.ok((await s.lag()) >= 2, 'partition 0’s records are not committed while held');

  held.open();
  await waitUntil(() => handled.includes('p0-behind'), { what: 'partition 0 to catch up' });
  assert.deepEqual(
    handled.filter((v) => v.startsWith('p0')),
    ['p0-first', 'p0-behind'],
  );
  await waitUntil(async () => (await s.lag()) === 0, { what: 'everything committed' });
});

test('order holds per partition across many batches, with nothing lost or repeated', async () => {
  const s = await setup(3);
  const total = 600;
  const seen = new Map<number, number[]>();
  let count = 0;
  let batches = 0;
  await s.consumer(
    async (batch) => {
      batches++;
      // Yield a few turns so fetches queue up behind the running batch and get paused and joined.
      for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
      const list = seen.get(batch.partition) ?? [];
      for (const r of batch.records) list.push(Number(r.offset));
      seen.set(batch.partition, list);
      count += batch.records.length;
    },
    { maxQueuedBatchesPerPartition: 1 },
  );
  for (let sent = 0; sent < total; sent += 20) {
    await s.producer.send(
      s.topic,
      Array.from({ length: 20 }, (_, i) => ({ key: `key-${(sent + i) % 30}`, value: String(sent + i) })),
    );
  }
  await waitUntil(() => count >= total, { what: `${total} records`, timeoutMs: 30_000 });
  assert.equal(count, total);
  assert.ok(batches > 3, `several batches per partition (${batches})`);
  for (const [partition, offsets] of seen) {
    assert.deepEqual(
      offsets,
      offsets.map((_, i) => i),
      `partition ${partition}: every offset once, in order`,
    );
  }
  await waitUntil(async () => (await s.lag()) === 0, { what: 'everything committed' });
});

test('offsets are committed only after the handler resolves', async () => {
  const s = await setup(1);
  const held = gate();
  const started = gate();
  let handled = 0;
  await s.consumer(async (batch) => {
    started.open();
    await held.opened;
    handled += batch.records.length;
  });
  await s.producer.send(
    s.topic,
    Array.from({ length: 5 }, (_, i) => ({ key: 'k', value: String(i) })),
  );
  await within(started.opened, 20_000, 'the handler to start');
  assert.equal(await s.lag(), 5, 'nothing committed while the handler runs');
  // More records fetched behind the held batch are not committed either.
  await s.producer.send(s.topic, [{ key: 'k', value: '5' }]);
  assert.equal(await s.lag(), 6);

  held.open();
  await waitUntil(async () => (await s.lag()) === 0, { what: 'the commit after the handler resolved' });
  assert.equal(handled, 6);
});

test('a throwing handler commits nothing and its records are read again, none lost', async () => {
  const s = await setup(1);
  const handled: string[] = [];
  const lagOnRetry: number[] = [];
  let failures = 0;
  await s.consumer(async (batch) => {
    const vs = values(batch);
    if (vs.includes('5')) {
      if (failures === 0) {
        failures++;
        throw new Error('transient failure');
      }
      lagOnRetry.push(await s.lag());
    }
    handled.push(...vs);
  });
  await s.producer.send(
    s.topic,
    ['0', '1', '2', '3', '4'].map((value) => ({ key: 'k', value })),
  );
  await waitUntil(async () => handled.length === 5 && (await s.lag()) === 0, {
    what: 'the first records handled and committed',
  });
  await s.producer.send(
    s.topic,
    ['5', '6', '7', '8', '9'].map((value) => ({ key: 'k', value })),
  );
  await waitUntil(() => handled.length === 10, { what: 'the failed records read again' });
  assert.equal(failures, 1);
  assert.deepEqual(lagOnRetry, [5], 'the failed batch was not committed');
  assert.deepEqual(handled, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
  await waitUntil(async () => (await s.lag()) === 0, { what: 'the retried batch committed' });
});

test('close() lets the running batch finish, commits it, and leaves', async () => {
  const s = await setup(1);
  const held = gate();
  const started = gate();
  let ctxOfHeld: BatchContext | undefined;
  let finished = 0;
  const consumer = await s.consumer(async (batch, ctx) => {
    ctxOfHeld = ctx;
    started.open();
    await held.opened;
    finished += batch.records.length;
  });
  await s.producer.send(s.topic, [
    { key: 'k', value: 'a' },
    { key: 'k', value: 'b' },
  ]);
  await within(started.opened, 20_000, 'the handler to start');
  assert.equal(ctxOfHeld?.isActive(), true);

  const closing = consumer.close();
  assert.equal(ctxOfHeld?.isActive(), false, 'a closing consumer asks handlers to stop taking work');
  assert.equal(consumer.joined, false);
  held.open();
  await within(closing, 20_000, 'close() to return');
  await consumer.close();
  assert.equal(finished, 2);
  assert.equal(await s.lag(), 0, 'what finished during close() is committed');
});

test('a long batch keeps the membership: heartbeats go on while the handler runs', async () => {
  const s = await setup(2);
  const [key0, key1] = [keyOn(0, 2), keyOn(1, 2)];
  const sessionTimeoutMs = 6_000;
  const assignments: unknown[] = [];
  const handled: string[] = [];
  await s.consumer(
    async (batch) => {
      if (values(batch).includes('long')) {
        // The condition under test: a handler that outlives the session timeout and never
        // heartbeats itself.
        await new Promise((resolve) => setTimeout(resolve, sessionTimeoutMs + 1_500));
      }
      handled.push(...values(batch));
    },
    { sessionTimeoutMs, heartbeatIntervalMs: 500, onAssignment: (a) => assignments.push(a) },
  );
  await s.producer.send(s.topic, [{ key: key0, value: 'long' }]);
  await s.producer.send(s.topic, [{ key: key1, value: 'short' }]);
  await waitUntil(() => handled.includes('long'), { what: 'the long batch', timeoutMs: 20_000 });
  await waitUntil(async () => (await s.lag()) === 0, { what: 'both committed' });
  assert.deepEqual(handled.sort(), ['long', 'short'], 'each handled once: no rebalance redelivered it');
  assert.equal(assignments.length, 1, 'the member never lost its assignment');
});

test('a revoked partition’s running batch turns inactive and its late commit is dropped', async () => {
  const s = await setup(1);
  const held = gate();
  const started = gate();
  let ctxOfHeld: BatchContext | undefined;
  const byB: string[] = [];
  // kafkajs's round-robin assignor gives partition 0 to the lowest member id, and member ids
  // start with the client id: "b-…" joining later takes the partition from "z-…".
  const kafkaA = testKafkaClient(`z-${uniquePrefix('member')}`);
  const kafkaB = testKafkaClient(`b-${uniquePrefix('member')}`);
  const common = { groupId: s.groupId, topics: [s.topic], fromBeginning: true, heartbeatIntervalMs: 500 };
  let handledByA = 0;
  const a = kafkaA.consumer({
    ...common,
    handleBatch: async (batch, ctx) => {
      if (values(batch).includes('held')) {
        ctxOfHeld = ctx;
        started.open();
        await held.opened;
      }
      handledByA += batch.records.length;
    },
  });
  cleanups.push(() => a.close());
  await a.start();
  await s.producer.send(s.topic, [{ key: 'k', value: 'first' }]);
  await waitUntil(async () => (await s.lag()) === 0, { what: 'A to commit the first record' });
  await s.producer.send(s.topic, [{ key: 'k', value: 'held' }]);
  await within(started.opened, 20_000, 'A’s held batch to start');

  const assignedToB: number[][] = [];
  const b = kafkaB.consumer({
    ...common,
    handleBatch: async (batch) => {
      byB.push(...values(batch));
    },
    onAssignment: (assignment) => assignedToB.push(assignment[s.topic] ?? []),
  });
  cleanups.push(() => b.close());
  await b.start();
  assert.deepEqual(assignedToB, [[0]], 'B took the partition');
  assert.equal(ctxOfHeld?.isActive(), false, 'A’s running batch is told to stop');

  await waitUntil(() => byB.includes('held'), { what: 'B to read the uncommitted record again' });
  await s.producer.send(s.topic, [
    { key: 'k', value: 'later-1' },
    { key: 'k', value: 'later-2' },
  ]);
  await waitUntil(async () => byB.includes('later-2') && (await s.lag()) === 0, {
    what: 'B to handle and commit everything',
  });

  // A's batch now completes; committing its offset (2) would move B's position (4) backwards.
  held.open();
  await within(a.close(), 20_000, 'A to close');
  assert.equal(handledByA, 2);
  assert.equal(await s.lag(), 0, 'A’s late commit was dropped');
  await s.producer.send(s.topic, [{ key: 'k', value: 'after' }]);
  await waitUntil(() => byB.includes('after'), { what: 'B still consuming' });
  assert.deepEqual(byB, ['held', 'later-1', 'later-2', 'after']);
});

test('per-record completions: later records run past an unfinished one, whose offset holds the commit', async () => {
  const s = await setup(1);
  const held = gate();
  const finished: string[] = [];
  let slowSignal: AbortSignal | undefined;
  const first = await s.consumer(async (batch, ctx) => ({
    finished: batch.records.map(async (r) => {
      const value = r.value?.toString() ?? '';
      if (value === 'slow') {
        slowSignal = ctx.signal;
        // Settles unfinished when the consumer closes: the record is left to the next owner.
        await Promise.race([
          held.opened,
          new Promise<never>((_, reject) =>
            ctx.signal.addEventListener('abort', () => reject(new Error('closing')), { once: true }),
          ),
        ]);
      }
      finished.push(value);
    }),
  }));
  await s.producer.send(s.topic, [{ key: 'k', value: 'before' }]);
  await waitUntil(async () => finished.includes('before') && (await s.lag()) === 0, {
    what: 'the first record committed',
  });
  await s.producer.send(s.topic, [{ key: 'k', value: 'slow' }]);
  await s.producer.send(
    s.topic,
    ['a', 'b', 'c'].map((value) => ({ key: 'k', value })),
  );
  await waitUntil(() => finished.includes('c'), { what: 'the records behind the slow one to finish' });
  assert.deepEqual(finished, ['before', 'a', 'b', 'c'], 'nothing waited for the slow record');
  assert.equal(
    first.progress().find((p) => p.partition === 0)?.oldestUnfinishedOffset,
    '1',
    'the slow record is the oldest unfinished one',
  );
  // Committing waits at the slow record: four records (slow, a, b, c) stay uncommitted.
  assert.equal(await s.lag(), 4);

  // The member goes away with the slow record unfinished; the next one starts from it.
  await within(first.close(), 20_000, 'the first member to close');
  assert.equal(slowSignal?.aborted, true);
  const second: string[] = [];
  await s.consumer(async (batch) => {
    second.push(...values(batch));
  });
  await waitUntil(async () => second.includes('c') && (await s.lag()) === 0, {
    what: 'the next member to read from the unfinished record',
  });
  assert.deepEqual(second, ['slow', 'a', 'b', 'c'], 'nothing after the committed offset was skipped');
  held.open();
});

/**
 * A group member speaking a partition-assignment protocol no other member knows: the coordinator
 * refuses any member that shares none with it (INCONSISTENT_GROUP_PROTOCOL), an error kafkajs
 * does not retry.
 */
const foreignAssigner: PartitionAssigner = () => ({
  name: 'PushlineTestForeignAssigner',
  version: 1,
  assign: ({ members }) =>
    Promise.resolve(
      members.map((m) => ({
        memberId: m.memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({
          version: 1,
          assignment: {},
          userData: Buffer.alloc(0),
        }),
      })),
    ),
  protocol: ({ topics }) => ({
    name: 'PushlineTestForeignAssigner',
    metadata: AssignerProtocol.MemberMetadata.encode({ version: 1, topics, userData: Buffer.alloc(0) }),
  }),
});

test('a crash the client gives up on does not end the consumer: it starts again and consumes', async () => {
  const s = await setup(1);
  const foreign = new Kafka({ brokers: testInfra().kafkaBrokers, logLevel: logLevel.NOTHING }).consumer({
    groupId: s.groupId,
    partitionAssigners: [foreignAssigner],
  });
  let foreignRunning = true;
  cleanups.push(async () => {
    if (foreignRunning) await foreign.disconnect();
  });
  const foreignJoined = new Promise<void>((resolve) =>
    foreign.on(foreign.events.GROUP_JOIN, () => resolve()),
  );
  await foreign.connect();
  await foreign.subscribe({ topics: [s.topic] });
  await foreign.run({ eachMessage: () => Promise.resolve() });
  await foreignJoined;

  const crashes: string[] = [];
  let crashed!: () => void;
  const firstCrash = new Promise<void>((resolve) => (crashed = resolve));
  const seen: string[] = [];
  const consumer = s.kafka.consumer({
    groupId: s.groupId,
    topics: [s.topic],
    fromBeginning: true,
    handleBatch: (batch) => {
      seen.push(...values(batch));
      return Promise.resolve();
    },
    onCrash: (_err, restartedBy) => {
      crashes.push(restartedBy);
      crashed();
    },
  });
  cleanups.push(() => consumer.close());
  const started = consumer.start();
  started.catch(() => undefined);

  // Refused by the group: kafkajs leaves it for good.
  await within(firstCrash, 30_000, 'the consumer to be refused by the group');
  assert.equal(crashes[0], 'consumer', 'kafkajs gave up on this crash itself');
  assert.equal(consumer.joined, false);

  // The foreign member leaves; the consumer is started again by itself and joins.
  await foreign.disconnect();
  foreignRunning = false;
  await within(started, 60_000, 'the consumer to join after starting again');
  assert.equal(consumer.joined, true);
  await s.producer.send(s.topic, [{ key: 'k', value: 'after-the-crash' }]);
  await waitUntil(() => seen.includes('after-the-crash'), { what: 'the record after the crash' });
});
