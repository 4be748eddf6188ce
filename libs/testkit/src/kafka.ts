import { createKafkaClient, type IncomingRecord, type KafkaClient } from '@pushline/kafka';
import { silentLogger } from '@pushline/telemetry';
import { testInfra } from './infra.ts';

/** A client on the run's Kafka, or on `brokers` (a cluster a test started itself). */
export function testKafkaClient(clientId = 'pushline-test', brokers?: readonly string[]): KafkaClient {
  return createKafkaClient({
    brokers: brokers ?? testInfra().kafkaBrokers,
    clientId,
    logger: silentLogger(),
  });
}

/**
 * Reads a topic from the beginning in its own consumer group and resolves once `count` records
 * matching `filter` have arrived (or rejects at the deadline).
 */
export async function collectRecords(
  kafka: KafkaClient,
  topic: string,
  count: number,
  options: { filter?: (r: IncomingRecord) => boolean; timeoutMs?: number } = {},
): Promise<IncomingRecord[]> {
  const seen: IncomingRecord[] = [];
  let done!: () => void;
  const enough = new Promise<void>((resolve) => (done = resolve));
  const consumer = kafka.consumer({
    groupId: `collect-${topic}-${Math.random().toString(36).slice(2)}`,
    topics: [topic],
    fromBeginning: true,
    handleBatch: async (batch) => {
      for (const r of batch.records) if (!options.filter || options.filter(r)) seen.push(r);
      if (seen.length >= count) done();
    },
  });
  const timeoutMs = options.timeoutMs ?? 20_000;
  let timer: NodeJS.Timeout | undefined;
  try {
    await consumer.start();
    await Promise.race([
      enough,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`expected ${count} records on ${topic}, saw ${seen.length}`)),
          timeoutMs,
        );
      }),
    ]);
    return seen;
  } finally {
    clearTimeout(timer);
    await consumer.close();
  }
}

/** Parses a record's JSON value. */
export function recordJson(record: IncomingRecord): unknown {
  return JSON.parse(record.value?.toString('utf8') ?? 'null');
}
