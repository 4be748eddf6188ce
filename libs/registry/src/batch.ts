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
 * the batch is a pipeline: one write, one round trip, executed in order. On a cluster a pipeline
 * must stay on one node, so each command is sent on its own and the cluster client's
 * auto-pipelining groups those of one event-loop turn per node: one round trip per node, in
 * parallel, and no order between nodes.
 */
export async function sendAllSettled(redis: RedisClient, calls: readonly BatchCall[]): Promise<BatchReply[]> {
  if (calls.length === 0) return [];
  if (isCluster(redis)) {
    const target = redis as unknown as Dispatch;
    const settled = await Promise.allSettled(
      calls.map(async ([method, ...args]) => callMethod(target, method, args)),
    );
    return settled.map((s) => (s.status === 'fulfilled' ? { value: s.value } : { error: asError(s.reason) }));
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

function callMethod(target: Dispatch, method: string, args: (string | number)[]): unknown {
  const fn = target[method];
  if (typeof fn !== 'function') throw new TypeError(`no Redis command ${method}`);
  return fn.apply(target, args);
}

function asError(reason: unknown): Error {
  return reason instanceof Error ? reason : new Error(String(reason));
}
