import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Semaphore } from '@pushline/message-processor';

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
