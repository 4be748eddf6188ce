import { Kafka, logLevel as KafkaLogLevel, type LogEntry } from 'kafkajs';
import type { Logger } from '@pushline/telemetry';
import { KafkajsConsumer } from './kafkajs-consumer.ts';
import { javaCompatiblePartitioner } from './partitioner.ts';
import type { Admin, KafkaClient, OutgoingRecord, PartitionLag, Producer, TopicSpec } from './types.ts';

export interface KafkaClientOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly logger: Logger;
  /**
   * Retries of a failed request inside the client. Default 8. A caller that repeats its requests
   * on a timer anyway (the canary's lag reads) takes 0, so no retry outlives its close().
   */
  readonly retries?: number;
}

/** The kafkajs implementation of the platform's Kafka interfaces. */
export function createKafkaClient(options: KafkaClientOptions): KafkaClient {
  const log = options.logger.child({ component: 'kafka' });
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    logLevel: KafkaLogLevel.WARN,
    logCreator: () => (entry: LogEntry) => logKafka(log, entry),
    retry: { initialRetryTime: 100, retries: options.retries ?? 8 },
  });
  return {
    producer: () => new KafkajsProducer(kafka),
    consumer: (consumerOptions) => new KafkajsConsumer(kafka, consumerOptions, log),
    admin: () => new KafkajsAdmin(kafka),
  };
}

function logKafka(log: Logger, entry: LogEntry): void {
  const { message, ...extra } = entry.log;
  const fields = { namespace: entry.namespace, ...extra };
  if (entry.level === KafkaLogLevel.ERROR) log.error(fields, message);
  else if (entry.level === KafkaLogLevel.WARN) log.warn(fields, message);
  else log.debug(fields, message);
}

class KafkajsProducer implements Producer {
  readonly #producer;
  #closing: Promise<void> | undefined;

  constructor(kafka: Kafka) {
    this.#producer = kafka.producer({
      createPartitioner: javaCompatiblePartitioner,
      allowAutoTopicCreation: false,
      idempotent: true,
      maxInFlightRequests: 5,
    });
  }

  async start(): Promise<void> {
    await this.#producer.connect();
  }

  async send(topic: string, records: readonly OutgoingRecord[]): Promise<void> {
    if (records.length === 0) return;
    await this.#producer.send({
      topic,
      acks: -1,
      messages: records.map((r) => ({
        key: r.key,
        value: r.value,
        ...(r.headers ? { headers: { ...r.headers } } : {}),
      })),
    });
  }

  close(): Promise<void> {
    return (this.#closing ??= this.#producer.disconnect());
  }
}

class KafkajsAdmin implements Admin {
  readonly #admin;
  #connected: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(kafka: Kafka) {
    this.#admin = kafka.admin();
  }

  #connect(): Promise<void> {
    return (this.#connected ??= this.#admin.connect());
  }

  async ensureTopics(specs: readonly TopicSpec[], timeoutMs = 30_000): Promise<void> {
    await this.#connect();
    const existing = new Set(await this.#admin.listTopics());
    const missing = specs.filter((s) => !existing.has(s.name));
    if (missing.length === 0) return;
    try {
      await this.#admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((s) => ({
          topic: s.name,
          numPartitions: s.partitions,
          replicationFactor: -1,
          configEntries: Object.entries(s.config ?? {}).map(([name, value]) => ({ name, value })),
        })),
      });
    } catch (err) {
      // Several services boot at once and race to create the same topics; losing is fine. kafkajs's
      // wait for leaders can also surface UNKNOWN_TOPIC_OR_PARTITION from a broker whose metadata
      // lags the controller on Kafka 4: the wait below settles both.
      if (!isKafkaError(err, ['TOPIC_ALREADY_EXISTS', 'UNKNOWN_TOPIC_OR_PARTITION', 'LEADER_NOT_AVAILABLE']))
        throw err;
    }
    await this.#waitForLeaders(
      missing.map((s) => s.name),
      timeoutMs,
    );
  }

  async #waitForLeaders(topics: string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastProblem = 'no metadata yet';
    for (let attempt = 0; ; attempt++) {
      try {
        const metadata = await this.#admin.fetchTopicMetadata({ topics });
        const leaderless = metadata.topics.filter(
          (t) => t.partitions.length === 0 || t.partitions.some((p) => p.leader < 0),
        );
        if (leaderless.length === 0) return;
        lastProblem = `no leader yet for ${leaderless.map((t) => t.name).join(', ')}`;
      } catch (err) {
        lastProblem = err instanceof Error ? err.message : String(err);
      }
      if (Date.now() > deadline) {
        throw new Error(`topics ${topics.join(', ')} have no leaders after ${timeoutMs} ms: ${lastProblem}`);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(1_000, 25 * 2 ** attempt)));
    }
  }

  async listTopics(): Promise<string[]> {
    await this.#connect();
    return this.#admin.listTopics();
  }

  async groupLag(groupId: string, topic: string): Promise<number> {
    const partitions = await this.groupLagByPartition(groupId, topic);
    return partitions.reduce((sum, p) => sum + p.lag, 0);
  }

  async groupLagByPartition(groupId: string, topic: string): Promise<PartitionLag[]> {
    await this.#connect();
    const [ends, committed] = await Promise.all([
      this.#admin.fetchTopicOffsets(topic),
      this.#admin.fetchOffsets({ groupId, topics: [topic] }),
    ]);
    const committedByPartition = new Map<number, number>();
    for (const t of committed) {
      for (const p of t.partitions) committedByPartition.set(p.partition, Number(p.offset));
    }
    return ends
      .map((p) => {
        const end = Number(p.high);
        const done = committedByPartition.get(p.partition) ?? -1;
        const lag = done < 0 ? end - Number(p.low) : Math.max(0, end - done);
        return { partition: p.partition, end, committed: done, lag };
      })
      .sort((x, y) => x.partition - y.partition);
  }

  close(): Promise<void> {
    return (this.#closing ??= this.#connected ? this.#admin.disconnect() : Promise.resolve());
  }
}

/** True for a kafkajs protocol error (or an aggregate of them) of one of the given types. */
function isKafkaError(err: unknown, types: readonly string[]): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const { type, errors } = err as { type?: unknown; errors?: unknown };
  if (typeof type === 'string' && types.includes(type)) return true;
  return Array.isArray(errors) && errors.length > 0 && errors.every((e) => isKafkaError(e, types));
}

/** The Kafka client of a service from the common config, with a client id naming the service. */
export function serviceKafkaClient(
  config: { readonly PUSHLINE_KAFKA_BROKERS: readonly string[]; readonly PUSHLINE_KAFKA_CLIENT_ID: string },
  service: string,
  logger: Logger,
): KafkaClient {
  return createKafkaClient({
    brokers: config.PUSHLINE_KAFKA_BROKERS,
    clientId: `${config.PUSHLINE_KAFKA_CLIENT_ID}-${service}`,
    logger,
  });
}
