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
 * the batch is a pipeline: one write, one round trip, executed in order. A client that
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
  if (isCluster(redis) || redis.options.enableAutoPipelining === true) {
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
