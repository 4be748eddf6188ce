import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { Partitioners } from 'kafkajs';
import { silentLogger } from '@pushline/telemetry';
import type { BatchContext, IncomingRecord, RecordBatch, TakenBatch } from '@pushline/kafka';
import { OffsetCommitter, type PartitionOffset } from '../src/offset-committer.ts';
import { OffsetTracker } from '../src/offset-tracker.ts';
import { PartitionPipeline, type FetchedBatch, type PipelineHost } from '../src/partition-pipeline.ts';
import { javaCompatiblePartitioner, murmur2, partitionForKey } from '../src/partitioner.ts';

/** A promise the test resolves when it chooses. */
function gate(): { open: () => void; opened: Promise<void> } {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

function fetched(partition: number, from: number, count: number): FetchedBatch {
  const records: IncomingRecord[] = Array.from({ length: count }, (_, i) => ({
    topic: 't',
    partition,
    offset: String(from + i),
    key: null,
    value: null,
    headers: {},
    timestamp: 0,
  }));
  return { topic: 't', partition, records, nextOffset: String(from + count), lag: 0 };
}

/** Records what the pipeline asks of the client; `on` resolves when a call matching it happens. */
class FakeHost implements PipelineHost {
  readonly calls: string[] = [];
  readonly #waiters: { match: string; resolve: () => void }[] = [];
  pause(_topic: string, partition: number): void {
    this.#record(`pause ${partition}`);
  }
  resume(_topic: string, partition: number): void {
    this.#record(`resume ${partition}`);
  }
  seek(_topic: string, partition: number, offset: string): void {
    this.#record(`seek ${partition} ${offset}`);
  }
  done(_topic: string, partition: number, nextOffset: string, generation: number): void {
    this.#record(`done ${partition} ${nextOffset} g${generation}`);
  }
  heartbeat(): Promise<void> {
    return Promise.resolve();
  }
  on(match: string): Promise<void> {
    if (this.calls.includes(match)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ match, resolve }));
  }
  #record(call: string): void {
    this.calls.push(call);
    for (const w of this.#waiters.filter((w) => w.match === call)) w.resolve();
  }
}

type Handler = (batch: RecordBatch, ctx: BatchContext) => Promise<void> | Promise<TakenBatch>;

function pipeline(
  host: FakeHost,
  handleBatch: Handler,
  options: { maxQueued?: number; slots?: number; maxUnfinished?: number } = {},
) {
  return new PartitionPipeline({
    handleBatch,
    host,
    logger: silentLogger(),
    maxQueuedBatches: options.maxQueued ?? 4,
    maxConcurrentPartitions: options.slots ?? Number.POSITIVE_INFINITY,
    ...(options.maxUnfinished === undefined ? {} : { maxUnfinishedPerPartition: options.maxUnfinished }),
    retryDelayMs: () => 0,
  });
}

/** Hands back one completion per record that the test settles by offset. */
class Completions {
  readonly #settle = new Map<number, { resolve: () => void; reject: (err: unknown) => void }>();
  readonly taken: number[][] = [];
  handler(): (batch: RecordBatch) => Promise<TakenBatch> {
    return async (batch) => {
      this.taken.push(offsets(batch));
      return {
        finished: batch.records.map(
          (r) =>
            new Promise<void>((resolve, reject) => this.#settle.set(Number(r.offset), { resolve, reject })),
        ),
      };
    };
  }
  finish(...offsets: number[]): void {
    for (const o of offsets) this.#settle.get(o)?.resolve();
  }
  fail(offset: number, err: unknown = new Error('record failed')): void {
    this.#settle.get(offset)?.reject(err);
  }
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

const offsets = (b: RecordBatch) => b.records.map((r) => Number(r.offset));

describe('PartitionPipeline', () => {
  it('joins what queued behind a running batch into the next one, pausing at the bound', async () => {
    const host = new FakeHost();
    const first = gate();
    const seen: number[][] = [];
    const p = pipeline(
      host,
      async (batch) => {
        seen.push(offsets(batch));
        if (seen.length === 1) await first.opened;
      },
      { maxQueued: 2 },
    );
    p.push(fetched(0, 0, 2));
    p.push(fetched(0, 2, 1));
    assert.deepEqual(host.calls, []);
    p.push(fetched(0, 3, 2));
    assert.deepEqual(host.calls, ['pause 0'], 'paused at two queued batches');
    first.open();
    await host.on('done 0 5 g0');
    assert.deepEqual(seen, [
      [0, 1],
      [2, 3, 4],
    ]);
    assert.deepEqual(host.calls, ['pause 0', 'done 0 2 g0', 'resume 0', 'done 0 5 g0']);
  });

  it('runs partitions independently, at most `maxConcurrentPartitions` at once', async () => {
    const host = new FakeHost();
    const held = gate();
    const running = new Set<number>();
    let most = 0;
    const p = pipeline(
      host,
      async (batch) => {
        running.add(batch.partition);
        most = Math.max(most, running.size);
        if (batch.partition === 0) await held.opened;
        running.delete(batch.partition);
      },
      { slots: 2 },
    );
    for (const partition of [0, 1, 2, 3]) p.push(fetched(partition, 0, 1));
    await host.on('done 3 1 g0');
    assert.equal(most, 2);
    assert.ok(!host.calls.includes('done 0 1 g0'), 'partition 0 is still held');
    held.open();
    await host.on('done 0 1 g0');
  });

  it('a failed batch is not done: the partition drops what followed, seeks back, and resumes', async () => {
    const host = new FakeHost();
    const held = gate();
    const seen: number[][] = [];
    const p = pipeline(host, async (batch) => {
      seen.push(offsets(batch));
      if (seen.length === 1) {
        await held.opened;
        throw new Error('boom');
      }
    });
    p.push(fetched(0, 10, 2));
    p.push(fetched(0, 12, 2));
    held.open();
    await host.on('resume 0');
    assert.deepEqual(host.calls, ['pause 0', 'seek 0 10', 'resume 0']);
    assert.equal(seen.length, 1, 'the batch queued behind the failed one was dropped');
    assert.equal(p.accepts('t', 0), true);
    p.push(fetched(0, 10, 4));
    await host.on('done 0 14 g0');
    assert.deepEqual(seen[1], [10, 11, 12, 13]);
  });

  it('a new generation stops the running batch, drops the queue and reports nothing for it', async () => {
    const host = new FakeHost();
    const held = gate();
    let ctxOfHeld: BatchContext | undefined;
    const seen: number[][] = [];
    const p = pipeline(host, async (batch, ctx) => {
      seen.push(offsets(batch));
      if (seen.length === 1) {
        ctxOfHeld = ctx;
        await held.opened;
      }
    });
    p.push(fetched(0, 0, 1));
    p.push(fetched(0, 1, 1));
    assert.equal(ctxOfHeld?.isActive(), true);
    p.invalidate();
    assert.equal(ctxOfHeld?.isActive(), false);
    // The new generation reads from the last commit; its batch waits behind the old one.
    p.push(fetched(0, 0, 2));
    held.open();
    await host.on('done 0 2 g1');
    assert.deepEqual(seen, [[0], [0, 1]]);
    assert.deepEqual(host.calls, ['done 0 2 g1']);
  });

  it('drain drops queued batches, tells running ones to stop, and waits for them', async () => {
    const host = new FakeHost();
    const held = gate();
    let ctxOfHeld: BatchContext | undefined;
    const seen: number[][] = [];
    const p = pipeline(host, async (batch, ctx) => {
      seen.push(offsets(batch));
      ctxOfHeld = ctx;
      await held.opened;
    });
    p.push(fetched(0, 0, 1));
    p.push(fetched(0, 1, 1));
    let drained = false;
    const draining = p.drain().then(() => (drained = true));
    assert.equal(ctxOfHeld?.isActive(), false);
    assert.equal(p.accepts('t', 0), false);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(drained, false);
    held.open();
    await draining;
    assert.deepEqual(seen, [[0]]);
    assert.deepEqual(host.calls, ['done 0 1 g0'], 'what finished while draining is still reported');
  });
});

describe('OffsetTracker', () => {
  it('commits up to the lowest unfinished offset, whatever finished after it', () => {
    const t = new OffsetTracker();
    assert.equal(t.committable, undefined);
    t.take(['10', '11', '12'], '13');
    assert.equal(t.committable, '10');
    assert.equal(t.finish('12'), undefined, 'a later record finishing does not move it');
    assert.equal(t.finish('11'), undefined);
    assert.equal(t.committable, '10');
    assert.equal(t.finish('10'), '13', 'the lowest one finishing moves it past everything finished');
    assert.equal(t.unfinished, 0);
    t.take(['13', '15'], '16');
    assert.equal(t.finish('15'), undefined);
    assert.equal(t.finish('15'), undefined, 'finishing twice is a no-op');
    assert.equal(t.finish('13'), '16');
  });

  it('records taken already finished move the end, and offsets already handed over are skipped', () => {
    const t = new OffsetTracker();
    t.take(['0'], '1');
    t.take([], '5');
    assert.equal(t.committable, '0');
    assert.equal(t.finish('0'), '5');
    t.take(['3', '7'], '8');
    assert.deepEqual(t.progress().oldestUnfinishedOffset, '7', 'offset 3 was handed over before');
    assert.equal(t.finish('3'), undefined);
    assert.equal(t.finish('7'), '8');
  });

  it('reports the oldest unfinished record and when it was handed over', () => {
    const t = new OffsetTracker();
    t.take(['4', '5'], '6', 1_000);
    t.take(['6'], '7', 2_000);
    t.finish('4');
    assert.deepEqual(t.progress(), {
      unfinished: 2,
      oldestUnfinishedOffset: '5',
      oldestUnfinishedSince: 1_000,
    });
    t.finish('5');
    assert.deepEqual(t.progress(), {
      unfinished: 1,
      oldestUnfinishedOffset: '6',
      oldestUnfinishedSince: 2_000,
    });
  });
});

describe('PartitionPipeline with per-record completions', () => {
  it('takes the next batch while records of the previous run, and commits the lowest unfinished', async () => {
    const host = new FakeHost();
    const c = new Completions();
    const p = pipeline(host, c.handler());
    p.push(fetched(0, 0, 3));
    await turn();
    p.push(fetched(0, 3, 2));
    await turn();
    assert.deepEqual(
      c.taken,
      [
        [0, 1, 2],
        [3, 4],
      ],
      'the second batch was taken with the first unfinished',
    );
    c.finish(1, 2, 3, 4);
    await turn();
    assert.deepEqual(host.calls, [], 'nothing committed past the unfinished record 0');
    assert.deepEqual(
      p.progress().map((x) => [x.partition, x.unfinished, x.oldestUnfinishedOffset]),
      [[0, 1, '0']],
    );
    c.finish(0);
    await host.on('done 0 5 g0');
    assert.deepEqual(host.calls, ['done 0 5 g0']);
    assert.deepEqual(p.progress()[0]?.unfinished, 0);
  });

  it('waits with the next batch at the unfinished bound, and takes it once records finish', async () => {
    const host = new FakeHost();
    const c = new Completions();
    const p = pipeline(host, c.handler(), { maxUnfinished: 2, maxQueued: 2 });
    p.push(fetched(0, 0, 2));
    await turn();
    p.push(fetched(0, 2, 1));
    p.push(fetched(0, 3, 1));
    await turn();
    assert.deepEqual(c.taken, [[0, 1]]);
    assert.deepEqual(host.calls, ['pause 0'], 'the queue filled up behind the bound and fetching paused');
    c.finish(1);
    await turn();
    assert.deepEqual(
      c.taken,
      [
        [0, 1],
        [2, 3],
      ],
      'one finished record made room',
    );
    assert.ok(host.calls.includes('resume 0'));
    c.finish(0, 2, 3);
    await host.on('done 0 4 g0');
  });

  it('a record that settles unfinished rewinds the partition to its lowest unfinished offset', async () => {
    const host = new FakeHost();
    const c = new Completions();
    const p = pipeline(host, c.handler());
    p.push(fetched(0, 0, 4));
    await turn();
    c.finish(0);
    await host.on('done 0 1 g0');
    c.finish(2, 3);
    c.fail(1);
    await host.on('resume 0');
    assert.deepEqual(host.calls, ['done 0 1 g0', 'pause 0', 'seek 0 1', 'resume 0']);
    // The partition is read again from 1; records 2 and 3 come again.
    p.push(fetched(0, 1, 3));
    await turn();
    assert.deepEqual(c.taken[1], [1, 2, 3]);
    c.finish(1, 2, 3);
    await host.on('done 0 4 g0');
  });

  it('a new generation ignores records still finishing, and drain waits for every one', async () => {
    const host = new FakeHost();
    const c = new Completions();
    let ctxOfFirst: BatchContext | undefined;
    const handler = c.handler();
    const p = pipeline(host, async (batch, ctx) => {
      ctxOfFirst ??= ctx;
      return handler(batch);
    });
    p.push(fetched(0, 0, 2));
    await turn();
    assert.equal(ctxOfFirst?.signal.aborted, false);
    p.invalidate();
    assert.equal(ctxOfFirst?.signal.aborted, true, 'the signal of the ended generation is aborted');
    c.finish(0, 1);
    await turn();
    assert.deepEqual(host.calls, [], 'late completions of the ended generation are not reported');

    p.push(fetched(0, 0, 2));
    await turn();
    let drained = false;
    const draining = p.drain().then(() => (drained = true));
    await turn();
    assert.equal(drained, false, 'drain waits for records in hand');
    c.finish(1, 0);
    await draining;
    assert.deepEqual(host.calls, ['done 0 2 g1'], 'what finished while draining is reported');
  });

  it('shows a partition whose records do not finish as stalled since its last progress', async () => {
    const host = new FakeHost();
    const c = new Completions();
    const p = pipeline(host, c.handler());
    const before = Date.now();
    p.push(fetched(0, 0, 2));
    await turn();
    c.finish(1);
    await turn();
    const [stuck] = p.progress(Date.now() + 60_000);
    assert.ok((stuck?.stalledSince ?? 0) >= before, 'busy without progress for a minute');
    c.finish(0);
    await host.on('done 0 2 g0');
    assert.equal(p.progress(Date.now() + 60_000)[0]?.stalledSince, undefined, 'idle is not stalled');
  });
});

describe('OffsetCommitter', () => {
  function committer(
    commit: (offsets: readonly PartitionOffset[]) => Promise<void>,
    options: { lingerMs?: number } = {},
  ) {
    const state = { current: 0 };
    const c = new OffsetCommitter({
      commit,
      isCurrent: (generation) => generation === state.current,
      logger: silentLogger(),
      ...options,
    });
    return { c, state };
  }
  const show = (offsets: readonly PartitionOffset[]) => offsets.map((o) => `${o.partition}@${o.offset}`);

  it('commits what finished meanwhile in one request, newest offset per partition', async () => {
    const sent: string[][] = [];
    const { c } = committer(async (offsets) => void sent.push(show(offsets)));
    c.add('t', 0, '5', 0);
    c.add('t', 0, '9', 0);
    c.add('t', 1, '3', 0);
    c.add('t', 0, '7', 0);
    await c.flush();
    assert.deepEqual(sent, [['0@9', '1@3']]);
  });

  it('drops offsets of an ended generation, and retries a failed commit', async () => {
    const sent: string[][] = [];
    let fail = true;
    const { c, state } = committer(async (offsets) => {
      sent.push(show(offsets));
      if (fail) {
        fail = false;
        throw new Error('coordinator moved');
      }
    });
    c.add('t', 0, '4', 0);
    state.current = 1;
    c.add('t', 1, '2', 1);
    await c.flush();
    assert.deepEqual(sent, [['1@2'], ['1@2']]);
  });

  it('a flush with only offsets of an ended generation pending resolves (close never hangs on it)', async () => {
    const sent: string[][] = [];
    const { c, state } = committer(async (offsets) => void sent.push(show(offsets)), { lingerMs: 60_000 });
    c.add('t', 0, '4', 0);
    state.current = 1;
    await c.flush();
    assert.deepEqual(sent, []);
  });

  it('lingers before sending, but flush sends at once', async () => {
    const sent: string[][] = [];
    const { c } = committer(async (offsets) => void sent.push(show(offsets)), { lingerMs: 60_000 });
    c.add('t', 0, '1', 0);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(sent, []);
    await c.flush();
    assert.deepEqual(sent, [['0@1']]);
  });
});

describe('javaCompatiblePartitioner', () => {
  it('puts every key where kafkajs’s (and the Java client’s) default partitioner does', () => {
    const ours = javaCompatiblePartitioner();
    const theirs = Partitioners.DefaultPartitioner();
    const keys: (string | Buffer)[] = ['', 'a', 'ab', 'abc', 'abcd', 'device:0', 'user:ü→✓', randomBytes(0)];
    for (let i = 0; i < 2_000; i++) keys.push(randomBytes(i % 40), `device:${randomUUID()}`);
    for (const partitions of [1, 3, 12, 50]) {
      const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({
        partitionErrorCode: 0,
        partitionId,
        leader: 0,
        replicas: [0],
        isr: [0],
      }));
      for (const key of keys) {
        const args = { topic: 't', partitionMetadata, message: { key, value: null } };
        assert.equal(ours(args), theirs(args), `key ${String(key)} over ${partitions}`);
        if (typeof key === 'string') assert.equal(partitionForKey(key, partitions), theirs(args));
      }
    }
  });

  it('matches the Java client’s murmur2 on known values', () => {
    // Kafka's UtilsTest.testMurmur2.
    const cases: [string, number][] = [
      ['21', -973932308],
      ['foobar', -790332482],
      ['a-little-bit-long-string', -985981536],
      ['a-little-bit-longer-string', -1486304829],
      ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
    ];
    for (const [key, hash] of cases) assert.equal(murmur2(Buffer.from(key)), hash, key);
  });
});
