import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { MessageProcessorConfig } from '@pushline/config';
import { createKafkaClient, type KafkaClient } from '@pushline/kafka';
import { closeOnce, runCleanup } from '@pushline/runtime';
import {
  createMetricsRegistry,
  trace,
  type Logger,
  type Registry,
  type TracingHandle,
  type Tracer,
} from '@pushline/telemetry';
import { Redis } from 'ioredis';
import { createMessageProcessor, type MessageProcessor } from './service.ts';

/**
 * The id this instance goes by in traces, logs, metrics and request claims:
 * PUSHLINE_PROCESSOR_INSTANCE_ID, else `<hostname>-<pid>-<random>`. Draw it once per process.
 */
export function processorInstanceId(config: MessageProcessorConfig): string {
  return (
    config.PUSHLINE_PROCESSOR_INSTANCE_ID ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  );
}

export interface AssembleMessageProcessorOptions {
  /** Without an instanceId field: the assembly adds it to every line. */
  readonly logger: Logger;
  /** Default: `processorInstanceId(config)`. */
  readonly instanceId?: string;
  /** Default: a registry with the process metrics, labelled with the service and the instance id. */
  readonly metrics?: Registry;
  /** Default: the `pushline-message-processor` tracer of the global provider. */
  readonly tracer?: Tracer;
  /** The caller's, and left open by `close()`. Default: a client on PUSHLINE_REDIS_URL, owned. */
  readonly redis?: Redis;
  /** Default: a client on PUSHLINE_KAFKA_BROKERS. */
  readonly kafka?: KafkaClient;
  /** Started by main.ts and handed over: closed last, so the spans of the shutdown are exported. */
  readonly tracing?: TracingHandle;
}

/** A message processor with everything it runs on, wired the way the deployed process runs. */
export interface AssembledMessageProcessor {
  /** Connects Redis, then starts the processor (topics, group, sweeper, ops port); cleans up if it fails. */
  start(): Promise<void>;
  /** Finishes and commits the records in hand, then closes what the processor and this root own. Idempotent. */
  close(): Promise<void>;
  readonly processor: MessageProcessor;
  readonly instanceId: string;
  readonly redis: Redis;
  readonly kafka: KafkaClient;
  readonly metrics: Registry;
}

/** The composition root of the message processor, used by main.ts and by tests alike. */
export function assembleMessageProcessor(
  config: MessageProcessorConfig,
  options: AssembleMessageProcessorOptions,
): AssembledMessageProcessor {
  const instanceId = options.instanceId ?? processorInstanceId(config);
  // The processor adds the instance id to its own lines; these are the lines around it.
  const logger = options.logger.child({ instanceId });
  const ownedRedis = options.redis ? undefined : new Redis(config.PUSHLINE_REDIS_URL, { lazyConnect: true });
  ownedRedis?.on('error', (err: Error) => logger.warn({ err }, 'redis error'));
  const redis = options.redis ?? (ownedRedis as Redis);
  const kafka =
    options.kafka ??
    createKafkaClient({
      brokers: config.PUSHLINE_KAFKA_BROKERS,
      clientId: `${config.PUSHLINE_KAFKA_CLIENT_ID}-message-processor`,
      logger,
    });
  const metrics =
    options.metrics ?? createMetricsRegistry({ service: 'message-processor', instance: instanceId });
  const processor = createMessageProcessor({
    config: { ...config, PUSHLINE_PROCESSOR_INSTANCE_ID: instanceId },
    redis,
    kafka,
    logger: options.logger,
    metrics,
    tracer: options.tracer ?? trace.getTracer('pushline-message-processor'),
  });

  const { tracing } = options;
  const close = closeOnce(() =>
    runCleanup([
      { name: 'message processor', run: () => processor.close() },
      { name: 'redis', run: async () => void (await ownedRedis?.quit()) },
      { name: 'tracing', run: () => tracing?.close() },
    ]),
  );

  return {
    processor,
    instanceId,
    redis,
    kafka,
    metrics,
    close,
    async start() {
      try {
        await ownedRedis?.connect();
        await processor.start();
      } catch (err) {
        await close().catch((closeErr: unknown) =>
          logger.error({ err: closeErr }, 'cleanup after a failed start failed'),
        );
        throw err;
      }
    },
  };
}
