import { createRequire } from 'node:module';
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

/** What a test reads of one fetch request kafkajs sends. */
interface KafkaFetchArgs {
  readonly maxWaitTime: number;
  readonly topics: readonly { readonly topic: string }[];
}

const fetchWatchers = new Set<(args: KafkaFetchArgs) => void>();
let unpatchFetch: (() => void) | undefined;

/**
 * Calls `onFetch` with the arguments of every fetch request any kafkajs broker connection of this
 * process sends, until the returned function is called. For tests of what a consumer asks the
 * broker for (the wait of each fetch); kafkajs has no event that carries a request's arguments.
 * One wrapper serves every watcher, so watches may end in any order.
 */
function watchKafkaFetches(onFetch: (args: KafkaFetchArgs) => void): () => void {
  if (!unpatchFetch) {
    const require = createRequire(import.meta.url);
    const Broker = require('kafkajs/src/broker/index.js') as {
      prototype: { fetch(this: unknown, args: KafkaFetchArgs): Promise<unknown> };
    };
    const fetch = Broker.prototype.fetch;
    Broker.prototype.fetch = function (this: unknown, args: KafkaFetchArgs) {
      for (const watcher of [...fetchWatchers]) watcher(args);
      return fetch.call(this, args);
    };
    unpatchFetch = () => {
      Broker.prototype.fetch = fetch;
      unpatchFetch = undefined;
    };
  }
  fetchWatchers.add(onFetch);
  return () => {
    fetchWatchers.delete(onFetch);
    if (fetchWatchers.size === 0) unpatchFetch?.();
  };
}

/** The wait the next fetch request for `topic` asks the broker for (the watch ends with it). */
export function nextFetchWait(topic: string): Promise<number> {
  return new Promise((resolve) => {
    const stop = watchKafkaFetches((args) => {
      if (!args.topics.some((t) => t.topic === topic)) return;
      stop();
      resolve(args.maxWaitTime);
    });
  });
}
