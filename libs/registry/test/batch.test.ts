import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  closeRedis,
  isCluster,
  sendAll,
  sendAllSettled,
  sendGrouped,
  type BatchCall,
  type RedisClient,
} from '@pushline/registry';
import { testRedis, uniquePrefix } from '@pushline/testkit';

/** Counts the writes the client makes to its Redis connection from now on. */
function countWrites(redis: RedisClient): { readonly count: number } {
  assert.ok(!isCluster(redis), 'these cases are about one Redis');
  const stream = redis.stream;
  const write = stream.write.bind(stream) as (...args: unknown[]) => boolean;
  const counter = { count: 0 };
  stream.write = ((...args: unknown[]) => {
    counter.count++;
    return write(...args);
  }) as typeof stream.write;
  return counter;
}

/** Two counters, a hash read of the first (WRONGTYPE: it holds a string) and a read of the second. */
function batchOf(prefix: string): BatchCall[] {
  return [
    ['incr', `${prefix}:a`],
    ['incrby', `${prefix}:b`, 5],
    ['hget', `${prefix}:a`, 'field'],
    ['get', `${prefix}:b`],
  ];
}

for (const autoPipelining of [false, true]) {
  describe(`sendAll on one Redis, ${autoPipelining ? 'auto-pipelining' : 'no auto-pipelining'}`, () => {
    const clients: RedisClient[] = [];
    after(async () => {
      for (const c of clients) await closeRedis(c);
    });
    async function client(): Promise<RedisClient> {
      const redis = testRedis({ enableAutoPipelining: autoPipelining });
      clients.push(redis);
      await redis.connect();
      return redis;
    }

    it('answers every command in order, a failing one with its own error and the others with their replies', async () => {
      const redis = await client();
      const prefix = uniquePrefix('batch');
      const replies = await sendAllSettled(redis, batchOf(prefix));
      assert.deepEqual(
        replies.map((r) => r.value),
        [1, 5, undefined, '5'],
      );
      assert.match(String(replies[2]?.error?.message), /WRONGTYPE/);
      await assert.rejects(sendAll(redis, batchOf(prefix)), /WRONGTYPE/);
      assert.equal(await redis.get(`${prefix}:b`), '10', 'the commands around the failure ran');
    });

    it('refuses a batch naming a command the client does not have before sending any of it', async () => {
      const redis = await client();
      const key = uniquePrefix('batch');
      await assert.rejects(
        sendAllSettled(redis, [
          ['incr', key],
          ['nosuchcommand', 'x'],
        ]),
        { name: 'TypeError', message: 'no Redis command nosuchcommand' },
      );
      assert.equal(await redis.get(key), null);
    });

    // An auto-pipelining client builds its own pipeline per turn, so this is about the other kind.
    if (!autoPipelining)
      it('sends a batch of one command as that command, without building a pipeline', async () => {
        const redis = await client();
        let pipelines = 0;
        const pipeline = redis.pipeline.bind(redis);
        redis.pipeline = ((...args: Parameters<typeof redis.pipeline>) => {
          pipelines++;
          return pipeline(...args);
        }) as typeof redis.pipeline;
        const prefix = uniquePrefix('batch');
        assert.deepEqual(await sendAll(redis, [['incr', `${prefix}:one`]]), [1]);
        const [reply] = await sendAllSettled(redis, [['hget', `${prefix}:one`, 'field']]);
        assert.match(String(reply?.error?.message), /WRONGTYPE/, 'its error is its own reply');
        assert.equal(pipelines, 0);
        await sendAll(redis, batchOf(prefix).slice(0, 2));
        assert.equal(pipelines, 1, 'two commands: one pipeline');
      });

    it('sendGrouped sends items to a many-item script in calls of at most perCall, replies in order', async () => {
      const redis = await client();
      // Each item's key and a default for it; the reply is each key's value or its default.
      const lua = `
        local values = {}
        for i = 1, #KEYS do values[i] = redis.call('GET', KEYS[i]) or (ARGV[1] .. ARGV[i + 1]) end
        return values`;
      redis.defineCommand('testGetOr', { numberOfKeys: 1, lua });
      redis.defineCommand('testGetOrMany', { lua });
      const prefix = uniquePrefix('batch');
      const items = Array.from({ length: 5 }, (_, i) => ({ key: `${prefix}:${i}`, fallback: `#${i}` }));
      await redis.set(`${prefix}:3`, 'three');
      const script = {
        one: 'testGetOr',
        many: 'testGetOrMany',
        keys: (item: (typeof items)[number]) => [item.key],
        shared: ['none'],
        args: (item: (typeof items)[number]) => [item.fallback],
      };
      assert.deepEqual(await sendGrouped(redis, items, 2, script), [
        ['none#0', 'none#1'],
        ['none#2', 'three'],
        ['none#4'],
      ]);
      assert.deepEqual(await sendGrouped(redis, [], 2, script), []);
    });

    it(
      autoPipelining
        ? 'sends the batches of two callers in one event-loop turn as one write'
        : 'sends each batch as one write of its own',
      async () => {
        const redis = await client();
        const writes = countWrites(redis);
        const prefix = uniquePrefix('batch');
        const [first, second] = await Promise.all([
          sendAll(redis, [
            ['incr', `${prefix}:x`],
            ['incr', `${prefix}:x`],
          ]),
          sendAll(redis, [['incr', `${prefix}:x`]]),
        ]);
        assert.deepEqual([first, second], [[1, 2], [3]], 'in the order the callers issued them');
        assert.equal(writes.count, autoPipelining ? 1 : 2);
      },
    );
  });
}
