import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { test } from 'node:test';
import { BufferedPublisher, type OutgoingRecord, type Producer } from '@pushline/kafka';
import { silentLogger } from '@pushline/telemetry';

/**
 * A producer whose sends the test completes by hand: the batching policy is pure logic, and a held
 * send is the only way to say exactly what arrives "during" one.
 */
class HeldProducer implements Producer {
  readonly sends: OutgoingRecord[][] = [];
  readonly #release: (() => void)[] = [];

  start(): Promise<void> {
    return Promise.resolve();
  }

  send(_topic: string, records: readonly OutgoingRecord[]): Promise<void> {
    this.sends.push([...records]);
    return new Promise((resolve) => this.#release.push(resolve));
  }

  /** Completes the oldest send still held. */
  releaseOne(): void {
    this.#release.shift()?.();
  }

  releaseAll(): void {
    while (this.#release.length > 0) this.releaseOne();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

function record(i: number): OutgoingRecord {
  return { key: `d${i}`, value: String(i) };
}

async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await nextTurn();
}

test('records that arrive during a send wait for their linger instead of following at once', async () => {
  const producer = new HeldProducer();
  // A linger longer than the test: anything sent before close() was sent for another reason.
  const publisher = new BufferedPublisher({
    producer,
    topic: 't',
    logger: silentLogger(),
    maxBatch: 3,
    lingerMs: 60_000,
  });
  for (let i = 0; i < 3; i++) publisher.publish(record(i));
  assert.equal(producer.sends.length, 1, 'a full batch goes at once');
  publisher.publish(record(3));
  producer.releaseOne();
  await settle();
  assert.equal(producer.sends.length, 1, 'the trailing record waits for its linger');
  assert.equal(publisher.queued, 1);

  const closed = publisher.close();
  await settle();
  producer.releaseAll();
  await closed;
  assert.deepEqual(
    producer.sends.map((batch) => batch.length),
    [3, 1],
    'close flushes what lingered',
  );
});

test('a full batch that builds up during a send goes right after it', async () => {
  const producer = new HeldProducer();
  const publisher = new BufferedPublisher({
    producer,
    topic: 't',
    logger: silentLogger(),
    maxBatch: 3,
    lingerMs: 60_000,
  });
  for (let i = 0; i < 7; i++) publisher.publish(record(i));
  assert.equal(producer.sends.length, 1);
  producer.releaseOne();
  await settle();
  assert.deepEqual(
    producer.sends.map((batch) => batch.length),
    [3, 3],
    'the second full batch did not wait; the seventh record does',
  );
  const closed = publisher.close();
  await settle();
  producer.releaseAll();
  await settle();
  producer.releaseAll();
  await closed;
  assert.deepEqual(
    producer.sends.map((batch) => batch.map((r) => r.value)),
    [['0', '1', '2'], ['3', '4', '5'], ['6']],
  );
});
