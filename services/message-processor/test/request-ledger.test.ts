import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { ClaimAbandonedError, RequestLedger } from '@pushline/message-processor';
import { silentLogger } from '@pushline/telemetry';
import { testInfra, uniquePrefix } from '@pushline/testkit';

describe('RequestLedger', () => {
  let redis: Redis;
  let prefix: string;
  const ledger = (instanceId: string, claimTtlMs = 10_000, onWait?: () => void) =>
    new RequestLedger({
      redis,
      keyPrefix: prefix,
      instanceId,
      claimTtlMs,
      windowSeconds: 60,
      logger: silentLogger(),
      ...(onWait ? { onWait } : {}),
    });

  before(() => {
    redis = new Redis(testInfra().redisUrl);
  });
  after(async () => {
    await redis.quit();
  });
  beforeEach(() => {
    prefix = `${uniquePrefix('ledger')}:`;
  });

  it('claims a new request once; a completed one is done for everyone', async () => {
    const a = ledger('a');
    const claim = await a.claim('r1');
    assert.equal(claim.status, 'claimed');
    await a.complete('r1');
    assert.deepEqual(await a.claim('r1'), { status: 'done' });
    assert.deepEqual(await ledger('b').claim('r1'), { status: 'done' });
    const ttl = await redis.ttl(`${prefix}req:r1`);
    assert.ok(ttl > 50 && ttl <= 60);
  });

  it('waits for another holder and then finds the request done', async () => {
    const a = ledger('a');
    await a.claim('r1');
    let waited = 0;
    const second = ledger('b', 10_000, () => waited++).claim('r1');
    // Complete only once the second one has seen the claim and started waiting.
    while (waited === 0) await new Promise((resolve) => setImmediate(resolve));
    await a.complete('r1');
    assert.deepEqual(await second, { status: 'done' });
    assert.equal(waited, 1);
  });

  it('takes over the claim of a holder that died once it expires', async () => {
    await ledger('dead', 200).claim('r1');
    const claim = await ledger('b').claim('r1');
    assert.equal(claim.status, 'claimed');
    assert.match(String(await redis.get(`${prefix}req:r1`)), /^proc:b:/);
  });

  it('release frees the request at once, but only the holder’s own claim', async () => {
    const a = ledger('a');
    const first = await a.claim('r1');
    assert.equal(first.status, 'claimed');
    if (first.status !== 'claimed') return;
    await a.release('r1', 'proc:someone-else:x');
    assert.ok(await redis.exists(`${prefix}req:r1`));
    await a.release('r1', first.token);
    assert.equal((await ledger('b').claim('r1')).status, 'claimed');
  });

  it('stops waiting when the batch is no longer active', async () => {
    await ledger('a').claim('r1');
    await assert.rejects(
      ledger('b').claim('r1', () => false),
      ClaimAbandonedError,
    );
  });
});
