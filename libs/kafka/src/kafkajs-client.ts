import { Kafka, logLevel as KafkaLogLevel, type ConfigResourceTypes, type LogEntry } from 'kafkajs';
import type { Logger } from '@pushline/telemetry';
import { KafkajsConsumer } from './kafkajs-consumer.ts';
import { KafkajsProducer } from './kafkajs-producer.ts';
import { scanTopicSince } from './log-scan.ts';
import { armQueueChecksOnlyWhenQueued } from './request-queue-timer.ts';
import {
  UnderReplicatedTopicsError,
  replicationPlan,
  type ReplicationPlan,
  type ReplicationPolicy,
  type TopicReplicationProblem,
} from './replication.ts';
import type { Admin, IncomingRecord, KafkaClient, PartitionLag, TopicSpec } from './types.ts';

/**
 * `ConfigResourceTypes.TOPIC`: kafkajs is CommonJS and node's named-export detection misses that
 * enum, so its value is spelled out (Kafka's protocol fixes it at 2).
 */
const TOPIC_RESOURCE = 2 as ConfigResourceTypes;

export interface KafkaClientOptions {
  readonly brokers: readonly string[];
  readonly clientId: string;
  readonly logger: Logger;
  /**
   * Retries of a failed request inside the client. Default 8. A caller that repeats its requests
   * on a timer anyway (the canary's lag reads) takes 0, so no retry outlives its close().
   */
  readonly retries?: number;
  /** How `Admin.ensureTopics` treats existing topics with too few replicas. Default: warn, minimum min(3, brokers). */
  readonly replication?: ReplicationPolicy;
  /**
   * How long the client waits for one broker request before failing it (kafkajs's default: 30 s).
   * A caller that must answer within a deadline of its own takes less.
   */
  readonly requestTimeoutMs?: number;
  /**
   * Longest a consumer's fetch waits at the broker for records. Default 500 ms: see
   * `DEFAULT_FETCH_WAIT_MS` in the consumer for what it costs and saves.
   */
  readonly fetchWaitMs?: number;
}

/** The kafkajs implementation of the platform's Kafka interfaces. */
export function createKafkaClient(options: KafkaClientOptions): KafkaClient {
  armQueueChecksOnlyWhenQueued();
  const log = options.logger.child({ component: 'kafka' });
  const kafka = new Kafka({
    clientId: options.clientId,
    brokers: [...options.brokers],
    logLevel: KafkaLogLevel.WARN,
    logCreator: () => (entry: LogEntry) => logKafka(log, entry),
    retry: { initialRetryTime: 100, retries: options.retries ?? 8 },
    ...(options.requestTimeoutMs === undefined ? {} : { requestTimeout: options.requestTimeoutMs }),
  });
  return {
    producer: () => new KafkajsProducer(kafka, log),
    consumer: (consumerOptions) => new KafkajsConsumer(kafka, consumerOptions, log, options.fetchWaitMs),
    admin: () => new KafkajsAdmin(kafka, log, options.replication ?? { onUnderReplicated: 'warn' }),
  };
}

function logKafka(log: Logger, entry: LogEntry): void {
  const { message, ...extra } = entry.log;
  const fields = { namespace: entry.namespace, ...extra };
  if (entry.level === KafkaLogLevel.ERROR) log.error(fields, message);
  else if (entry.level === KafkaLogLevel.WARN) log.warn(fields, message);
  else log.debug(fields, message);
}

/** Exported for its unit test only; the package entry exports `createKafkaClient`. */
export class KafkajsAdmin implements Admin {
  readonly #kafka: Kafka;
  readonly #admin;
  readonly #log: Logger;
  readonly #replication: ReplicationPolicy;
  #connected: Promise<void> | undefined;
  #closing: Promise<void> | undefined;

  constructor(kafka: Kafka, log: Logger, replication: ReplicationPolicy) {
    this.#kafka = kafka;
    this.#admin = kafka.admin();
    this.#log = log;
    this.#replication = replication;
  }

  #connect(): Promise<void> {
    return (this.#connected ??= this.#admin.connect());
  }

  async ensureTopics(specs: readonly TopicSpec[], timeoutMs = 30_000): Promise<void> {
    await this.#connect();
    const [topicNames, cluster] = await Promise.all([
      this.#admin.listTopics(),
      this.#admin.describeCluster(),
    ]);
    const existing = new Set(topicNames);
    const plan = replicationPlan(cluster.brokers.length, this.#replication.minReplicationFactor);
    const present = specs.filter((s) => existing.has(s.name));
    if (present.length > 0) await this.#checkReplication(present, plan, timeoutMs);
    const missing = specs.filter((s) => !existing.has(s.name));
    if (missing.length === 0) return;
    try {
      await this.#admin.createTopics({
        waitForLeaders: true,
        topics: missing.map((s) => ({
          topic: s.name,
          numPartitions: s.partitions,
          replicationFactor: plan.create.replicationFactor,
          configEntries: Object.entries({
            'min.insync.replicas': String(plan.create.minInsyncReplicas),
            ...s.config,
          }).map(([name, value]) => ({ name, value })),
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

  /** Compares existing topics with the plan's minimum; warns or refuses (`UnderReplicatedTopicsError`). */
  async #checkReplication(
    specs: readonly TopicSpec[],
    plan: ReplicationPlan,
    timeoutMs: number,
  ): Promise<void> {
    const names = specs.map((s) => s.name);
    // Listed by one broker, these topics may still be unknown to the broker asked next.
    const [metadata, configs] = await this.#untilSettled(
      `topics ${names.join(', ')}`,
      timeoutMs,
      async () => ({
        settled: await Promise.all([
          this.#admin.fetchTopicMetadata({ topics: names }),
          this.#admin.describeConfigs({
            includeSynonyms: false,
            resources: names.map((name) => ({
              type: TOPIC_RESOURCE,
              name,
              configNames: ['min.insync.replicas'],
            })),
          }),
        ]),
      }),
    );
    const minIsrOf = new Map<string, number>();
    for (const r of configs.resources) {
      const entry = r.configEntries.find((e) => e.configName === 'min.insync.replicas');
      if (entry) minIsrOf.set(r.resourceName, Number(entry.configValue));
    }
    const problems: TopicReplicationProblem[] = [];
    for (const t of metadata.topics) {
      const replicationFactor = Math.min(...t.partitions.map((p) => p.replicas.length));
      const minInsyncReplicas = minIsrOf.get(t.name) ?? 1;
      if (
        replicationFactor < plan.require.replicationFactor ||
        minInsyncReplicas < plan.require.minInsyncReplicas
      )
        problems.push({ topic: t.name, replicationFactor, minInsyncReplicas });
    }
    if (problems.length === 0) return;
    const err = new UnderReplicatedTopicsError(problems, plan.require);
    if (this.#replication.onUnderReplicated === 'refuse') throw err;
    this.#log.warn(
      { topics: problems, required: plan.require },
      `${err.message}; an acknowledged record may rest on too few brokers`,
    );
  }

  async #waitForLeaders(topics: string[], timeoutMs: number): Promise<void> {
    await this.#untilSettled(`topics ${topics.join(', ')}`, timeoutMs, async () => {
      const metadata = await this.#admin.fetchTopicMetadata({ topics });
      const leaderless = metadata.topics.filter(
        (t) => t.partitions.length === 0 || t.partitions.some((p) => p.leader < 0),
      );
      return leaderless.length === 0
        ? { settled: undefined }
        : { waitingFor: `a leader for ${leaderless.map((t) => t.name).join(', ')}` };
    });
  }

  /**
   * Repeats `read`, with backoff, until it settles or `timeoutMs` passes. Every error counts as a
   * reason to wait: on Kafka 4 each broker learns of a fresh topic on its own time, so for a moment
   * one lists it while another, asked next, answers UNKNOWN_TOPIC_OR_PARTITION or has no leader.
   */
  async #untilSettled<T>(
    what: string,
    timeoutMs: number,
    read: () => Promise<{ settled: T } | { waitingFor: string }>,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let lastProblem = 'no answer yet';
    for (let attempt = 0; ; attempt++) {
      try {
        const answer = await read();
        if ('settled' in answer) return answer.settled;
        lastProblem = `waiting for ${answer.waitingFor}`;
      } catch (err) {
        lastProblem = err instanceof Error ? err.message : String(err);
      }
      if (Date.now() > deadline)
        throw new Error(`${what}: not settled after ${timeoutMs} ms: ${lastProblem}`);
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

  async recordsSince(
    topic: string,
    sinceMs: number,
    visit: (record: IncomingRecord) => void,
    timeoutMs = 30_000,
  ): Promise<void> {
    await this.#connect();
    await scanTopicSince(this.#kafka, this.#admin, this.#log, topic, sinceMs, visit, timeoutMs);
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
  config: {
    readonly PUSHLINE_KAFKA_BROKERS: readonly string[];
    readonly PUSHLINE_KAFKA_CLIENT_ID: string;
    readonly PUSHLINE_KAFKA_MIN_REPLICATION_FACTOR?: number | undefined;
    readonly PUSHLINE_KAFKA_REPLICATION_CHECK?: 'warn' | 'refuse' | undefined;
    readonly PUSHLINE_KAFKA_FETCH_WAIT_MS?: number | undefined;
  },
  service: string,
  logger: Logger,
): KafkaClient {
  return createKafkaClient({
    brokers: config.PUSHLINE_KAFKA_BROKERS,
    clientId: `${config.PUSHLINE_KAFKA_CLIENT_ID}-${service}`,
    logger,
    ...(config.PUSHLINE_KAFKA_FETCH_WAIT_MS === undefined
      ? {}
      : { fetchWaitMs: config.PUSHLINE_KAFKA_FETCH_WAIT_MS }),
    replication: {
      onUnderReplicated: config.PUSHLINE_KAFKA_REPLICATION_CHECK ?? 'warn',
      ...(config.PUSHLINE_KAFKA_MIN_REPLICATION_FACTOR === undefined
        ? {}
        : { minReplicationFactor: config.PUSHLINE_KAFKA_MIN_REPLICATION_FACTOR }),
    },
  });
}
