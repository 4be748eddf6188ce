import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Semaphore, runKeyed } from '@pushline/message-processor';

interface Item {
  readonly key: string;
  readonly n: number;
}

const items = (spec: string): Item[] => spec.split(' ').map((token, n) => ({ key: token, n }));

/** A run function whose calls are settled by hand, to drive interleavings deterministically. */
function controlled() {
  const pending = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  const started: number[] = [];
  let onStart: (() => void) | undefined;
  const run = (item: Item) =>
    new Promise<void>((resolve, reject) => {
      started.push(item.n);
      pending.set(item.n, { resolve, reject });
      onStart?.();
    });
  const startedCount = (count: number) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (started.length >= count) {
          onStart = undefined;
          resolve();
        }
      };
      onStart = check;
      check();
    });
  const settle = (n: number, err?: Error) => {
    const p = pending.get(n);
    assert.ok(p, `item ${n} is running`);
    pending.delete(n);
    if (err) p.reject(err);
    else p.resolve();
  };
  return { run, started, startedCount, settle, running: () => [...pending.keys()].sort() };
}

describe('runKeyed', () => {
  it('runs one key in order, one at a time, and different keys in parallel', async () => {
    const c = controlled();
    const done = runKeyed(items('a b a c b a'), (i) => i.key, c.run, {
      semaphore: new Semaphore(10),
      shouldContinue: () => true,
    });
    await c.startedCount(3);
    // First item of each key: a(0), b(1), c(3).
    assert.deepEqual(c.running(), [0, 1, 3]);
    c.settle(0);
    await c.startedCount(4);
    assert.deepEqual(c.running(), [1, 2, 3]);
    c.settle(2);
    c.settle(1);
    c.settle(3);
    await c.startedCount(6);
    assert.deepEqual(c.running(), [4, 5]);
    c.settle(5);
    c.settle(4);
    assert.deepEqual(await done, { completed: 6, skipped: 0, errors: [] });
    const orderOfA = c.started.filter((n) => [0, 2, 5].includes(n));
    assert.deepEqual(orderOfA, [0, 2, 5]);
  });

  it('never runs more than the semaphore allows', async () => {
    const c = controlled();
    const semaphore = new Semaphore(2);
    const done = runKeyed(items('a b c d'), (i) => i.key, c.run, { semaphore, shouldContinue: () => true });
    await c.startedCount(2);
    assert.equal(c.running().length, 2);
    assert.equal(semaphore.inUse, 2);
    assert.equal(semaphore.waiting, 2);
    c.settle(c.running()[0] ?? -1);
    await c.startedCount(3);
    assert.equal(c.running().length, 2);
    for (const n of c.running()) c.settle(n);
    await c.startedCount(4);
    for (const n of c.running()) c.settle(n);
    assert.equal((await done).completed, 4);
    assert.equal(semaphore.inUse, 0);
  });

  it('stops starting records when shouldContinue turns false and lets running ones finish', async () => {
    const c = controlled();
    let active = true;
    const done = runKeyed(items('a a a b b'), (i) => i.key, c.run, {
      semaphore: new Semaphore(10),
      shouldContinue: () => active,
    });
    await c.startedCount(2);
    active = false;
    c.settle(0);
    c.settle(3);
    const result = await done;
    assert.deepEqual(result, { completed: 2, skipped: 3, errors: [] });
    assert.deepEqual(c.started, [0, 3]);
  });

  it('after a failure starts nothing more, skips the failed key, and reports the error', async () => {
    const c = controlled();
    const boom = new Error('boom');
    const done = runKeyed(items('a a b b'), (i) => i.key, c.run, {
      semaphore: new Semaphore(10),
      shouldContinue: () => true,
    });
    await c.startedCount(2);
    c.settle(0, boom);
    c.settle(2);
    const result = await done;
    assert.deepEqual(result, { completed: 1, skipped: 2, errors: [boom] });
    assert.deepEqual(c.started, [0, 2]);
  });

  it('an empty batch completes at once', async () => {
    assert.deepEqual(
      await runKeyed(
        [],
        () => 'k',
        async () => {},
        { semaphore: new Semaphore(1), shouldContinue: () => true },
      ),
      { completed: 0, skipped: 0, errors: [] },
    );
  });
});

describe('Semaphore', () => {
  it('hands permits to waiters in order and ignores a double release', async () => {
    const s = new Semaphore(1);
    const first = await s.acquire();
    const order: string[] = [];
    const second = s.acquire().then((release) => {
      order.push('second');
      return release;
    });
    const third = s.acquire().then((release) => {
      order.push('third');
      return release;
    });
    first();
    first();
    (await second)();
    (await third)();
    assert.deepEqual(order, ['second', 'third']);
    assert.equal(s.inUse, 0);
  });
});
