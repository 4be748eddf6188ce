import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import pLimit from 'p-limit';

/**
 * What the processor relies on from its one limiter (`inFlightLimit`, PUSHLINE_PROCESSOR_MAX_IN_FLIGHT):
 * records waiting for a slot start in the order they asked, never more than the bound run at once,
 * and `activeCount` (the `pushline_processor_in_flight` gauge) returns to 0 when they end, failed
 * ones included. Pinned here so that an upgrade of the package that changed any of it fails.
 */
describe('the in-flight limit', () => {
  it('hands slots to waiters in order, never runs more than its bound, and counts back to 0', async () => {
    const limit = pLimit(2);
    const started: number[] = [];
    let running = 0;
    let most = 0;
    const finish: (() => void)[] = [];
    const runs = [0, 1, 2, 3, 4].map((i) =>
      limit(async () => {
        started.push(i);
        running++;
        most = Math.max(most, running);
        await new Promise<void>((resolve) => finish.push(resolve));
        running--;
        if (i === 1) throw new Error('a failed record');
        return i;
      }),
    );
    // Observed from the start: a failed record's rejection is never unhandled.
    const settled = Promise.allSettled(runs);
    await nextTurn();
    assert.deepEqual(started, [0, 1]);
    assert.equal(limit.activeCount, 2);
    assert.equal(limit.pendingCount, 3);
    while (finish.length > 0) {
      finish.shift()?.();
      await nextTurn();
    }
    const results = await settled;
    assert.deepEqual(started, [0, 1, 2, 3, 4]);
    assert.equal(most, 2);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled'],
    );
    assert.equal(limit.activeCount, 0);
    assert.equal(limit.pendingCount, 0);
  });

  it('turns a synchronous throw into a rejection and frees the slot', async () => {
    const limit = pLimit(1);
    const abandoned = limit(() => {
      throw new Error('no longer ours');
    });
    await assert.rejects(abandoned, /no longer ours/);
    assert.equal(await limit(() => Promise.resolve('next')), 'next');
    assert.equal(limit.activeCount, 0);
  });
});
