import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeyedChains } from '@pushline/message-processor';

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

describe('KeyedChains', () => {
  /** Enqueues `spec` (one key per token) through the chains, each task held until settled by hand. */
  function enqueueAll(chains: KeyedChains, spec: string, c: ReturnType<typeof controlled>) {
    return items(spec).map((item) => chains.enqueue(item.key, () => c.run(item)));
  }

  it('runs one key in order, one at a time, and different keys at once', async () => {
    const c = controlled();
    const chains = new KeyedChains();
    const done = enqueueAll(chains, 'a b a c b a', c);
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
    await Promise.all(done);
    assert.deepEqual(
      c.started.filter((n) => [0, 2, 5].includes(n)),
      [0, 2, 5],
    );
    assert.equal(chains.keys, 0, 'settled keys are forgotten');
  });

  it('a key held up by a task that never settles holds up nothing else', async () => {
    const c = controlled();
    const chains = new KeyedChains();
    const done = enqueueAll(chains, 'slow fast slow fast fast', c);
    await c.startedCount(2);
    c.settle(1);
    await c.startedCount(3);
    c.settle(3);
    await c.startedCount(4);
    c.settle(4);
    assert.deepEqual(c.running(), [0], 'only the slow key’s first task is left running');
    assert.equal(c.started.includes(2), false, 'the slow key’s next task waits');
    c.settle(0);
    await c.startedCount(5);
    c.settle(2);
    await Promise.all(done);
  });

  it('chains across calls: a later batch’s task waits for the key’s earlier one', async () => {
    const c = controlled();
    const chains = new KeyedChains();
    const first = chains.enqueue('a', () => c.run({ key: 'a', n: 0 }));
    await c.startedCount(1);
    const second = chains.enqueue('a', () => c.run({ key: 'a', n: 1 }));
    const other = chains.enqueue('b', () => c.run({ key: 'b', n: 2 }));
    await c.startedCount(2);
    assert.deepEqual(c.running(), [0, 2]);
    c.settle(0, new Error('failed'));
    await assert.rejects(first);
    // The next task runs after a rejection too; it decides itself whether to go on.
    await c.startedCount(3);
    c.settle(1);
    c.settle(2);
    await Promise.all([second, other]);
  });
});
