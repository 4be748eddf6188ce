import { randomUUID } from 'node:crypto';
import type { Admin as KjsAdmin, Kafka } from 'kafkajs';
import { runCleanup } from '@pushline/runtime';
import type { Logger } from '@pushline/telemetry';
import { incomingRecord } from './kafkajs-consumer.ts';
import type { IncomingRecord } from './types.ts';

/** The scan did not reach the end of every partition in time (a broker that does not answer). */
export class LogScanTimeoutError extends Error {
  override readonly name = 'LogScanTimeoutError';
}

/**
 * Reads every record of `topic` written at or after `sinceMs` (record timestamps) up to where
 * each partition ended when the scan began, and hands each to `visit`. kafkajs reads only
 * through a consumer group, so the scan uses a throwaway group: its offsets are set to the
 * timestamp's before it joins, and it is deleted afterwards. Meant for rare checks (what a dead
 * process published before it died), not for streaming: a join costs a group round.
 */
export async function scanTopicSince(
  kafka: Kafka,
  admin: KjsAdmin,
  log: Logger,
  topic: string,
  sinceMs: number,
  visit: (record: IncomingRecord) => void,
  timeoutMs: number,
): Promise<void> {
  const [ends, starts] = await Promise.all([
    admin.fetchTopicOffsets(topic),
    admin.fetchTopicOffsetsByTimestamp(topic, sinceMs),
  ]);
  const endOf = new Map(ends.map((p) => [p.partition, BigInt(p.high)]));
  /** Partitions with records at or after the timestamp: partition → the offset the scan stops before. */
  const unread = new Map<number, bigint>();
  for (const p of starts) {
    const end = endOf.get(p.partition) ?? 0n;
    if (BigInt(p.offset) < end) unread.set(p.partition, end);
  }
  if (unread.size === 0) return;

  const groupId = `pushline-scan-${randomUUID()}`;
  await admin.setOffsets({
    groupId,
    topic,
    partitions: starts.map((p) => ({ partition: p.partition, offset: p.offset })),
  });
  const consumer = kafka.consumer({ groupId, allowAutoTopicCreation: false, maxWaitTimeInMs: 100 });
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic] });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(
        () => reject(new LogScanTimeoutError(`scanning ${topic} took over ${timeoutMs} ms`)),
        timeoutMs,
      );
      consumer
        .run({
          autoCommit: false,
          eachBatch: ({ batch }) => {
            const end = unread.get(batch.partition);
            if (end === undefined) return Promise.resolve();
            for (const m of batch.messages) {
              if (BigInt(m.offset) >= end) break;
              visit(incomingRecord(topic, batch.partition, m));
            }
            if (BigInt(batch.lastOffset()) + 1n >= end) unread.delete(batch.partition);
            if (unread.size === 0) resolve();
            return Promise.resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    // What is left behind (a group the broker drops once empty) is not worth failing the scan for.
    await runCleanup(
      [
        { name: 'scan consumer disconnect', run: () => consumer.disconnect() },
        { name: 'scan group delete', run: () => admin.deleteGroups([groupId]).then(() => undefined) },
      ],
      { stepTimeoutMs: 5_000 },
    ).catch((err: unknown) => log.warn({ err, groupId }, 'cleaning up after a log scan failed'));
  }
}
