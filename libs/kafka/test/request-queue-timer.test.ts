import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { afterEach, test } from 'node:test';
import { testKafkaClient, uniquePrefix } from '@pushline/testkit';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** What the test reads of kafkajs's per-connection request queue. */
interface QueueState {
  readonly pending: readonly unknown[];
  readonly throttleCheckTimeoutId: NodeJS.Timeout | null;
}

/** Every kafkajs request queue that gets a response from now on. */
function queuesThatAnswer(): Set<QueueState> {
  const require = createRequire(import.meta.url);
  const RequestQueue = require('kafkajs/src/network/requestQueue/index.js') as {
    prototype: { fulfillRequest(this: QueueState, ...args: unknown[]): unknown };
  };
  const seen = new Set<QueueState>();
  const fulfill = RequestQueue.prototype.fulfillRequest;
  RequestQueue.prototype.fulfillRequest = function (this: QueueState, ...args: unknown[]) {
    seen.add(this);
    return fulfill.apply(this, args);
  };
  cleanups.push(async () => {
    RequestQueue.prototype.fulfillRequest = fulfill;
  });
  return seen;
}

test('a broker connection with nothing queued arms no timer after its responses', async () => {
  const queues = queuesThatAnswer();
  const kafka = testKafkaClient('request-queue-timer');
  const topic = `${uniquePrefix('rqt')}.records`;
  const admin = kafka.admin();
  cleanups.push(() => admin.close());
  await admin.ensureTopics([{ name: topic, partitions: 1 }]);
  const producer = kafka.producer();
  cleanups.push(() => producer.close());
  await producer.start();
  await producer.send(topic, [{ key: 'k', value: 'v' }]);

  assert.ok(queues.size > 0, 'the admin and the producer got responses');
  for (const queue of queues) {
    assert.equal(queue.pending.length, 0);
    // kafkajs 2.2.4 re-arms a 1 ms timer here after every response, forever.
    assert.equal(queue.throttleCheckTimeoutId, null, 'no timer armed with nothing queued');
  }
});
