import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { MicroBatcher, type MicroBatcherOptions } from '@pushline/runtime';

/** A flush the test completes by hand: the only exact way to say what arrives "during" a batch. */
class HeldFlush {
  readonly batches: number[][] = [];
  readonly #release: ((err?: Error) => void)[] = [];

  readonly flush = (batch: number[]): Promise<void> => {
    this.batches.push(batch);
    return new Promise((resolve, reject) => this.#release.push((err) => (err ? reject(err) : resolve())));
  };

  get held(): number {
    return this.#release.length;
  }

  releaseOne(err?: Error): void {
    this.#release.shift()?.(err);
  }
}

function batcher(
  flush: (batch: number[]) => void | Promise<void>,
  options: Partial<MicroBatcherOptions<number>> = {},
): MicroBatcher<number> {
  return new MicroBatcher<number>({
    flush,
    onError: (err) => {
      throw err;
    },
    ...options,
  });
}

async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await nextTurn();
}

describe('MicroBatcher', () => {
  it('sends the items added in one turn as one batch, in order, on the next turn', async () => {
    const batches: number[][] = [];
    const b = batcher((batch) => void batches.push(batch));
    for (let i = 0; i < 4; i++) assert.equal(b.add(i), true);
    assert.deepEqual(batches, [], 'nothing goes before the turn ends');
    assert.equal(b.queued, 4);
    assert.equal(b.idle, false);
    await nextTurn();
    assert.deepEqual(batches, [[0, 1, 2, 3]]);
    assert.equal(b.idle, true);
    b.add(4);
    await nextTurn();
    assert.deepEqual(batches, [[0, 1, 2, 3], [4]], 'a later turn starts a new batch');
  });

  it('sends a full batch at once, and a synchronous flush writes every due batch in the same turn', async () => {
    const batches: number[][] = [];
    const b = batcher((batch) => void batches.push(batch), { maxBatch: 3 });
    for (let i = 0; i < 3; i++) b.add(i);
    assert.deepEqual(batches, [[0, 1, 2]], 'the third item filled the batch');
    for (let i = 3; i < 5; i++) b.add(i);
    await nextTurn();
    assert.deepEqual(batches, [
      [0, 1, 2],
      [3, 4],
    ]);

    const bursts: number[][] = [];
    const burst = batcher((batch) => void bursts.push(batch), { maxBatch: 1000 });
    for (let i = 0; i < 2500; i++) burst.add(i);
    await nextTurn();
    assert.deepEqual(
      bursts.map((x) => x.length),
      [1000, 1000, 500],
    );
  });

  it('puts an item added from inside a flush into a later batch', async () => {
    const batches: number[][] = [];
    const b: MicroBatcher<number> = batcher((batch) => {
      batches.push(batch);
      if (batch.includes(0)) b.add(1);
    });
    b.add(0);
    await turns();
    assert.deepEqual(batches, [[0], [1]]);
  });

  it('runs one batch at a time; what arrives meanwhile goes right after it, as one batch', async () => {
    const held = new HeldFlush();
    const b = batcher(held.flush);
    b.add(0);
    await nextTurn();
    assert.deepEqual(held.batches, [[0]]);
    b.add(1);
    b.add(2);
    await turns();
    b.add(3);
    await turns();
    assert.equal(held.batches.length, 1, 'the second batch waits for the first');
    assert.equal(b.queued, 3);
    held.releaseOne();
    await turns(1);
    assert.deepEqual(held.batches, [[0], [1, 2, 3]]);
    held.releaseOne();
    await turns();
    assert.equal(b.idle, true);
  });

  it('with a linger, items that arrive during a batch wait for it; a full batch does not', async () => {
    const held = new HeldFlush();
    // A linger longer than the test: a batch sent before flush() was sent because it was full.
    const b = batcher(held.flush, { maxBatch: 3, lingerMs: 60_000 });
    b.add(0);
    await turns();
    assert.equal(held.batches.length, 0, 'the first item lingers');
    b.add(1);
    b.add(2);
    assert.deepEqual(held.batches, [[0, 1, 2]]);
    for (let i = 3; i < 8; i++) b.add(i);
    held.releaseOne();
    await turns();
    assert.deepEqual(held.batches, [
      [0, 1, 2],
      [3, 4, 5],
    ]);
    held.releaseOne();
    await turns();
    assert.equal(held.batches.length, 2, 'the two left over wait for their linger');
    assert.equal(b.queued, 2);
    const flushed = b.flush();
    await turns(1);
    assert.deepEqual(held.batches.at(-1), [6, 7], 'flush() does not wait out the linger');
    held.releaseOne();
    await flushed;
    assert.equal(b.idle, true);
  });

  it('sends a lingering item once its linger has passed', async () => {
    let sent: (batch: number[]) => void = () => undefined;
    const batch = new Promise<number[]>((resolve) => (sent = resolve));
    const b = batcher((items) => sent(items), { lingerMs: 5 });
    b.add(7);
    b.add(8);
    assert.deepEqual(await batch, [7, 8]);
  });

  it('flush() resolves only once the batch running and everything queued before it are done', async () => {
    const held = new HeldFlush();
    const b = batcher(held.flush);
    b.add(0);
    await nextTurn();
    b.add(1);
    let done = false;
    const flushed = b.flush().then(() => (done = true));
    await turns();
    assert.equal(done, false, 'the first batch is still running');
    held.releaseOne();
    await turns();
    assert.deepEqual(held.batches, [[0], [1]]);
    assert.equal(done, false, 'the second batch is still running');
    held.releaseOne();
    await flushed;
    assert.equal(b.idle, true);
    await b.flush();
  });

  it('close() flushes what is queued, refuses new items, and is idempotent', async () => {
    const held = new HeldFlush();
    const b = batcher(held.flush, { lingerMs: 60_000 });
    b.add(0);
    b.add(1);
    const closed = b.close();
    assert.equal(b.close(), closed);
    assert.equal(b.add(2), false, 'a closed batcher takes nothing');
    await turns(1);
    assert.deepEqual(held.batches, [[0, 1]]);
    held.releaseOne();
    await closed;
    assert.equal(b.idle, true);
    assert.equal(held.held, 0);
  });

  it('hands a failed batch to onError and goes on with the next', async () => {
    const failures: { err: unknown; batch: readonly number[] }[] = [];
    const onError = (err: unknown, batch: readonly number[]) => failures.push({ err, batch });
    const thrown = new Error('sync');
    const seen: number[][] = [];
    const sync = batcher(
      (batch) => {
        seen.push(batch);
        if (batch.includes(0)) throw thrown;
      },
      { onError, maxBatch: 2 },
    );
    sync.add(0);
    sync.add(1);
    sync.add(2);
    await nextTurn();
    assert.deepEqual(seen, [[0, 1], [2]]);
    assert.deepEqual(failures, [{ err: thrown, batch: [0, 1] }]);

    const held = new HeldFlush();
    const rejected = new Error('async');
    const b = batcher(held.flush, { onError });
    b.add(3);
    await nextTurn();
    b.add(4);
    held.releaseOne(rejected);
    await turns(1);
    assert.deepEqual(failures.at(-1), { err: rejected, batch: [3] });
    assert.deepEqual(held.batches, [[3], [4]]);
    held.releaseOne();
    await b.flush();
  });

  it('drops the oldest item past its bound and hands it to onDrop', async () => {
    const dropped: number[] = [];
    const batches: number[][] = [];
    const b = batcher((batch) => void batches.push(batch), { maxQueued: 2, onDrop: (i) => dropped.push(i) });
    for (let i = 0; i < 5; i++) b.add(i);
    assert.deepEqual(dropped, [0, 1, 2]);
    await nextTurn();
    assert.deepEqual(batches, [[3, 4]]);
  });

  it('refuses a cap, linger or bound that could never work', () => {
    const flush = () => undefined;
    assert.throws(() => batcher(flush, { maxBatch: 0 }), RangeError);
    assert.throws(() => batcher(flush, { lingerMs: -1 }), RangeError);
    assert.throws(() => batcher(flush, { maxQueued: 0 }), RangeError);
    assert.throws(() => batcher(flush, { maxBatch: Number.NaN }), RangeError);
  });
});
