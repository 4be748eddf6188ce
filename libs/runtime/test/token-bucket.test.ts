import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TokenBucket } from '@pushline/runtime';

describe('TokenBucket', () => {
  it('allows a full burst at once, then refuses with the wait until the next token', () => {
    const bucket = new TokenBucket({ ratePerSecond: 2, burst: 3 }, 0);
    assert.deepEqual([bucket.take(0), bucket.take(0), bucket.take(0)], [0, 0, 0]);
    assert.equal(bucket.take(0), 500);
    assert.equal(bucket.take(100), 400);
  });

  it('refills at its rate and never holds more than the burst', () => {
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 2 }, 0);
    bucket.take(0);
    bucket.take(0);
    assert.equal(bucket.take(100), 0, 'one token after 100 ms at 10/s');
    assert.ok(bucket.take(100) > 0);
    // An hour of quiet refills only up to the burst.
    const later = 3_600_000;
    assert.deepEqual([bucket.take(later), bucket.take(later)], [0, 0]);
    assert.ok(bucket.take(later) > 0);
  });

  it('treats a clock that goes backwards as no time passing', () => {
    const bucket = new TokenBucket({ ratePerSecond: 1, burst: 1 }, 1_000);
    assert.equal(bucket.take(1_000), 0);
    assert.equal(bucket.take(0), 1_000);
  });

  it('refuses a rate or burst that could never give a token', () => {
    assert.throws(() => new TokenBucket({ ratePerSecond: 0, burst: 1 }, 0), RangeError);
    assert.throws(() => new TokenBucket({ ratePerSecond: 1, burst: 0 }, 0), RangeError);
    assert.throws(() => new TokenBucket({ ratePerSecond: Number.NaN, burst: 1 }, 0), RangeError);
  });
});
