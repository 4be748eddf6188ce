import { isCluster, type RedisClient } from './redis-client.ts';

/** One command of a batch: its ioredis method name (a defined script's too) and arguments. */
export type BatchCall = readonly [method: string, ...args: (string | number)[]];

/** A command's reply, or the error it failed with. */
export type BatchReply =
  | { readonly error: Error; readonly value?: undefined }
  | { readonly error?: undefined; readonly value: unknown };

type Dispatch = Record<string, (...args: (string | number)[]) => unknown>;

/**
 * Sends `calls` as one batch and resolves with each one's reply or error, in order. On one Redis
 * the batch is a pipeline: one write, one round trip, executed in order; a batch of one command is
 * sent as that command, without a pipeline (ioredis copies every defined script onto each pipeline
 * it builds: docs/performance.md, "One script call per batch"). A client that
 * auto-pipelines gets each command on its own instead: they join the pipeline of the current
 * event-loop turn with every other command of it, in the order issued, so the batches of several
 * callers in one turn (a burst of connects) share one write; a pipeline of the batch's own would
 * be a write of its own. On a cluster a pipeline must stay on one node, so each command is sent
 * on its own too and the cluster client's auto-pipelining groups those of one turn per node: one
 * round trip per node, in parallel, and no order between nodes. A batch naming a command the
 * client does not have is refused whole, before anything is sent.
 */
export async function sendAllSettled(redis: RedisClient, calls: readonly BatchCall[]): Promise<BatchReply[]> {
  if (calls.length === 0) return [];
  for (const [method] of calls) {
    if (typeof (redis as unknown as Dispatch)[method] !== 'function')
      throw new TypeError(`no Redis command ${method}`);
  }
  if (calls.length === 1 || isCluster(redis) || redis.options.enableAutoPipelining === true) {
    const target = redis as unknown as Dispatch;
    return Promise.all(calls.map(([method, ...args]) => settle(callMethod(target, method, args))));
  }
  const pipeline = redis.pipeline();
  const target = pipeline as unknown as Dispatch;
  for (const [method, ...args] of calls) callMethod(target, method, args);
  const results = (await pipeline.exec()) ?? [];
  return calls.map((_, i) => {
    const [err, value] = results[i] ?? [new Error('no reply in the pipeline'), undefined];
    return err ? { error: err } : { value };
  });
}

/** `sendAllSettled`, rejecting with the first command error. */
export async function sendAll(redis: RedisClient, calls: readonly BatchCall[]): Promise<unknown[]> {
  return (await sendAllSettled(redis, calls)).map((reply) => {
    if (reply.error) throw reply.error;
    return reply.value;
  });
}

/**
 * A Lua script that works on any number of items: KEYS are every item's keys in turn, ARGV the
 * shared arguments, then every item's own in turn. It is defined twice on the client, under two
 * names: with `numberOfKeys` set to one item's keys, and without (the number of keys then goes
 * first in each call).
 */
export interface GroupedScript<T> {
  /** The definition with one item's `numberOfKeys`: a call of one item. */
  readonly one: string;
  /** The definition without `numberOfKeys`: a call of many items. */
  readonly many: string;
  readonly keys: (item: T) => readonly string[];
  /** Arguments of every call, before the items' own. */
  readonly shared?: readonly (string | number)[];
  readonly args?: (item: T) => readonly (string | number)[];
}

/**
 * Sends `items` to a `GroupedScript` and resolves with each call's reply, in order. On one Redis
 * a call takes up to `perCall` items, so a batch costs one command, command timer, promise, script
 * run and reply per group instead of per item (docs/performance.md, "One script call per batch");
 * `perCall` bounds how long one call holds Redis. On a cluster every item goes alone, through the
 * one-item definition: the keys of different items are on different slots, and the cluster
 * client's auto-pipelining routes a command by its first argument, which must be a key.
 */
export async function sendGrouped<T>(
  redis: RedisClient,
  items: readonly T[],
  perCall: number,
  script: GroupedScript<T>,
): Promise<unknown[]> {
  const shared = script.shared ?? [];
  const argsOf = (item: T) => script.args?.(item) ?? [];
  if (isCluster(redis)) {
    return sendAll(
      redis,
      items.map((item): BatchCall => [script.one, ...script.keys(item), ...shared, ...argsOf(item)]),
    );
  }
  const calls: BatchCall[] = [];
  for (let i = 0; i < items.length; i += Math.max(1, perCall)) {
    const group = items.slice(i, i + Math.max(1, perCall));
    const keys = group.flatMap(script.keys);
    calls.push([script.many, keys.length, ...keys, ...shared, ...group.flatMap(argsOf)]);
  }
  return sendAll(redis, calls);
}

/** Issues one command of a checked batch: its reply's promise, or on a pipeline the pipeline. */
function callMethod(target: Dispatch, method: string, args: (string | number)[]): unknown {
  return (target[method] as (...a: (string | number)[]) => unknown).apply(target, args);
}

async function settle(reply: unknown): Promise<BatchReply> {
  try {
    return { value: await reply };
  } catch (err) {
    return { error: asError(err) };
  }
}

function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}
