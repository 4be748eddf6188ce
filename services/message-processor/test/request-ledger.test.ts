import assert from 'node:assert/strict';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import type { Command } from 'ioredis';
import { ClaimAbandonedError, LEDGER_SCRIPTS, RequestLedger } from '@pushline/message-processor';
import type { DeliveryEvent } from '@pushline/protocol';
import { silentLogger } from '@pushline/telemetry';
import type { RedisClient } from '@pushline/registry';
import { testRedis, uniquePrefix, waitUntil } from '@pushline/testkit';

describe('RequestLedger', () => {
  let redis: RedisClient;
  let prefix: string;
  const open: RequestLedger[] = [];
  const never = new AbortController().signal;
  const ledger = (
    instanceId: string,
    options: { claimTtlMs?: number; onWait?: () => void; onLost?: () => void } = {},
  ) => {
    const l = new RequestLedger({
      redis,
      keyPrefix: prefix,
      instanceId,
      claimTtlMs: options.claimTtlMs ?? 10_000,
      windowSeconds: 60,
      logger: silentLogger(),
      ...(options.onWait ? { onWait: options.onWait } : {}),
      ...(options.onLost ? { onLost: options.onLost } : {}),
    });
    open.push(l);
    return l;
  };

  before(() => {
    redis = testRedis();
  });
  after(async () => {
    await redis.quit();
  });
  beforeEach(() => {
    prefix = `${uniquePrefix('ledger')}:`;
  });
  afterEach(async () => {
    for (const l of open.splice(0)) await l.close();
  });

  it('claims a new request once; a completed one is done for everyone', async () => {
    const a = ledger('a');
    const claim = a.claimFor('r1', undefined);
    assert.equal(await a.claim(claim, never), 'claimed');
    assert.equal(a.holds(claim), true);
    await a.completeMany([claim]);
    assert.equal(a.holds(claim), false);
    assert.equal(await a.claim(a.claimFor('r1', undefined), never), 'done');
    const b = ledger('b');
    assert.equal(await b.claim(b.claimFor('r1', undefined), never), 'done');
    const ttl = await redis.ttl(claim.key);
    assert.ok(ttl > 50 && ttl <= 60);
  });

  it('hands an outcome recorded by a holder that died to the next holder, and forgets it once done', async () => {
    const a = ledger('a', { claimTtlMs: 300 });
    const claimA = a.claimFor('r1', 'key-a');
    assert.equal(await a.claim(claimA, never), 'claimed');
    const events: DeliveryEvent[] = [
      {
        v: 1,
        requestId: 'r1',
        target: { type: 'user', id: 'u1' },
        deviceId: 'd1',
        outcome: 'delivered',
        terminal: true,
        source: 'async',
        latencyMs: 4,
        attempts: 1,
        at: 1_700_000_000_123,
      },
    ];
    await a.recordOutcomes(
      [{ claim: claimA, serialized: events.map((ev) => JSON.stringify(ev)) }],
      1_700_000_000_100,
    );
    assert.equal(claimA.outcomeKey, `${prefix}outcome:{key-a/r1}`);

    // `a` dies: its claim expires, and `b` takes the request over with the recorded outcome.
    await a.close();
    const b = ledger('b');
    const claimB = b.claimFor('r1', 'key-a');
    const held = await b.claimMany([claimB]);
    assert.equal(held.get(claimB.key), 'held', 'not before the dead holder’s claim expired');
    await waitUntil(async () => (await b.claimMany([claimB])).get(claimB.key) === 'recorded', {
      what: 'the dead holder’s claim to expire',
    });
    assert.equal(b.holds(claimB), true);
    assert.equal(await b.claim(claimB, never), 'recorded', 'the holder renews, and is told again');
    assert.deepEqual(await b.recordedOutcome(claimB), { at: 1_700_000_000_100, events });

    await b.completeMany([claimB]);
    assert.equal(await b.recordedOutcome(claimB), undefined);
    assert.equal(await b.claim(b.claimFor('r1', 'key-a'), never), 'done');
  });

  it('handles a request again when what was recorded for it is unreadable', async () => {
    const a = ledger('a');
    const claim = a.claimFor('r2', undefined);
    await redis.set(claim.outcomeKey, '{"at":1,"events":[{"v":2}]}');
    assert.equal(await a.claim(claim, never), 'recorded');
    assert.equal(await a.recordedOutcome(claim), undefined);
  });

  it('scopes request ids by origin: the same id of two origins is two requests', async () => {
    const a = ledger('a');
    const fromKeyA = a.claimFor('same-id', 'key-a');
    const fromKeyB = a.claimFor('same-id', 'key-b');
    const fromKafka = a.claimFor('same-id', undefined);
    assert.equal(new Set([fromKeyA.key, fromKeyB.key, fromKafka.key]).size, 3);
    assert.equal(fromKafka.key, `${prefix}req:{~kafka/same-id}`);
    await a.claim(fromKeyA, never);
    await a.completeMany([fromKeyA]);
    assert.equal(await a.claim(fromKeyB, never), 'claimed', 'another origin’s id is not a duplicate');
    assert.equal(await a.claim(fromKafka, never), 'claimed');
  });

  it('claimMany claims many in one round trip and tells held and done apart', async () => {
    const a = ledger('a');
    const b = ledger('b');
    const held = b.claimFor('held', undefined);
    await b.claim(held, never);
    const done = b.claimFor('done', undefined);
    await b.claim(done, never);
    await b.completeMany([done]);
    const fresh = a.claimFor('fresh', undefined);
    const statuses = await a.claimMany([fresh, a.claimFor('held', undefined), a.claimFor('done', undefined)]);
    assert.deepEqual([...statuses.values()], ['claimed', 'held', 'done']);
    assert.equal(a.holds(fresh), true);
  });

  it('claims, records and completes a batch in one script call per 64 requests, each request still on its own', async () => {
    // A client of its own, so its script calls can be counted.
    const counted = testRedis();
    const scriptCalls: number[] = [];
    const send = counted.sendCommand.bind(counted);
    counted.sendCommand = (command: Command, ...rest: unknown[]) => {
      if (command.name === 'evalsha' || command.name === 'eval') scriptCalls.push(Number(command.args[1]));
      return (send as (c: Command, ...r: unknown[]) => unknown)(command, ...rest) as ReturnType<
        typeof counted.sendCommand
      >;
    };
    // Loaded first, so each call is one EVALSHA (not a NOSCRIPT answer, then an EVAL).
    for (const { lua } of Object.values(LEDGER_SCRIPTS)) await counted.script('LOAD', lua);
    const a = new RequestLedger({
      redis: counted,
      keyPrefix: prefix,
      instanceId: 'a',
      claimTtlMs: 10_000,
      windowSeconds: 60,
      logger: silentLogger(),
    });
    try {
      const other = ledger('b');
      const heldElsewhere = other.claimFor('r-7', undefined);
      await other.claim(heldElsewhere, never);
      const claims = Array.from({ length: 300 }, (_, i) => a.claimFor(`r-${i}`, undefined, i % 2 === 0));

      const statuses = await a.claimMany(claims);
      assert.deepEqual(scriptCalls.splice(0), [128, 128, 128, 128, 88], 'four calls of 64 requests, then 44');
      assert.equal(statuses.get(heldElsewhere.key), 'held');
      assert.equal([...statuses.values()].filter((s) => s === 'claimed').length, 299);

      const mine = claims.filter((c) => c.key !== heldElsewhere.key);
      const eventOf = (requestId: string): DeliveryEvent => ({
        v: 1,
        requestId,
        target: { type: 'device', id: `d-${requestId}` },
        deviceId: `d-${requestId}`,
        outcome: 'delivered',
        terminal: true,
        source: 'async',
        latencyMs: 2,
        attempts: 1,
        at: 1_700_000_000_000,
      });
      await a.recordOutcomes(
        mine.map((claim) => ({ claim, serialized: [JSON.stringify(eventOf(claim.requestId))] })),
        1_700_000_000_001,
      );
      assert.deepEqual(scriptCalls.splice(0), [64, 64, 64, 64, 43]);
      const r43 = mine[42];
      assert.ok(r43);
      assert.deepEqual(await a.recordedOutcome(r43), { at: 1_700_000_000_001, events: [eventOf('r-43')] });

      await a.completeMany(mine);
      assert.deepEqual(scriptCalls.splice(0), [192, 192, 192, 192, 129]);
      assert.equal(a.held, 0);
      const again = await ledger('c').claimMany(claims);
      assert.equal(again.get(heldElsewhere.key), 'held');
      assert.ok(mine.every((c) => again.get(c.key) === 'done'));
      assert.equal(await redis.exists(...mine.map((c) => c.outcomeKey)), 0, 'recorded outcomes forgotten');
    } finally {
      await a.close();
      await counted.quit();
    }
  });

  it('a claim made again with its own token is ours, not someone else’s to wait for', async () => {
    // E.g. a claimMany whose reply was lost to a hung Redis: the record claims again, same token.
    const a = ledger('a');
    const claim = a.claimFor('r1', undefined);
    await a.claimMany([claim]);
    let waited = 0;
    const again = ledger('a', { onWait: () => waited++ });
    assert.equal(await again.claim(claim, never), 'claimed');
    assert.equal(waited, 0);
  });

  it('waits for another holder and then finds the request done', async () => {
    const a = ledger('a');
    const first = a.claimFor('r1', undefined);
    await a.claim(first, never);
    let waited = 0;
    const b = ledger('b', { onWait: () => waited++ });
    const second = b.claim(b.claimFor('r1', undefined), never);
    await waitUntil(() => waited === 1, { what: 'the second holder to wait' });
    await a.completeMany([first]);
    assert.equal(await second, 'done');
  });

  it('renews held claims, so a long wait never lets another processor take one over', async () => {
    const a = ledger('a', { claimTtlMs: 300 });
    a.start();
    const claim = a.claimFor('r1', undefined);
    await a.claim(claim, never);
    // Several TTLs later the claim is still ours (renewed every third of the TTL).
    const observed: number[] = [];
    await waitUntil(
      async () => {
        observed.push(await redis.pttl(claim.key));
        return observed.length >= 10;
      },
      { what: 'ten observations', intervalMs: 100 },
    );
    assert.ok(
      observed.every((ms) => ms > 0),
      `never expired: ${observed.join(' ')}`,
    );
    assert.equal(await redis.get(claim.key), claim.token);
  });

  it('a dead holder’s claim (no more renewals) is taken over once it expires', async () => {
    const dead = ledger('dead', { claimTtlMs: 200 });
    await dead.claim(dead.claimFor('r1', undefined), never);
    const b = ledger('b');
    const claim = b.claimFor('r1', undefined);
    assert.equal(await b.claim(claim, never), 'claimed');
    assert.equal(await redis.get(claim.key), claim.token);
  });

  it('a renewal that finds the claim gone says so, and the holder no longer counts it held', async () => {
    let lost = 0;
    const a = ledger('a', { claimTtlMs: 300, onLost: () => lost++ });
    a.start();
    const claim = a.claimFor('r1', undefined);
    await a.claim(claim, never);
    await redis.set(claim.key, 'proc:someone-else:x');
    await waitUntil(() => lost === 1, { what: 'the renewal to notice' });
    assert.equal(a.holds(claim), false);
    assert.equal(await redis.get(claim.key), 'proc:someone-else:x', 'a newer holder is left alone');
  });

  it('releaseMany frees requests at once, but only the holder’s own claims', async () => {
    const a = ledger('a');
    const mine = a.claimFor('r1', undefined);
    await a.claim(mine, never);
    await a.releaseMany([{ ...mine, token: 'proc:someone-else:x' }]);
    assert.ok(await redis.exists(mine.key));
    await a.releaseMany([mine]);
    const b = ledger('b');
    assert.equal(await b.claim(b.claimFor('r1', undefined), never), 'claimed');
  });

  it('notes a send of a request with a ttl until it completes, for whoever takes it over', async () => {
    const a = ledger('a');
    const noTtl = a.claimFor('plain', undefined);
    assert.equal(noTtl.sentKey, undefined);
    await a.markSent(noTtl);
    assert.equal(await a.wasSent(noTtl), false, 'requests without a ttl keep no mark');

    const claim = a.claimFor('with-ttl', 'key-a', true);
    assert.equal(claim.sentKey, `${prefix}sent:{key-a/with-ttl}`);
    assert.equal(await a.wasSent(claim), false);
    await a.claim(claim, never);
    await a.markSent(claim);
    const b = ledger('b');
    assert.equal(await b.wasSent(b.claimFor('with-ttl', 'key-a', true)), true, 'another processor sees it');
    assert.equal(await b.wasSent(b.claimFor('with-ttl', 'key-b', true)), false, 'per origin');
    await a.completeMany([claim]);
    assert.equal(await redis.exists(claim.sentKey ?? ''), 0, 'completing removes it');
  });

  it('stops waiting when the record is no longer ours', async () => {
    const a = ledger('a');
    await a.claim(a.claimFor('r1', undefined), never);
    const b = ledger('b');
    const gone = new AbortController();
    const waiting = b.claim(b.claimFor('r1', undefined), gone.signal);
    gone.abort();
    await assert.rejects(waiting, ClaimAbandonedError);
  });
});
