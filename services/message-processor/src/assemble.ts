import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { topicNames, type MessageProcessorConfig } from '@pushline/config';
import { ensurePlatformTopics, serviceKafkaClient, type KafkaClient } from '@pushline/kafka';
import { closeRedis, serviceRedis, type RedisClient } from '@pushline/registry';
import { assemblyLifecycle, type AssemblyOptions, type Component } from '@pushline/runtime';
import { createMetricsRegistry, trace, type Registry } from '@pushline/telemetry';
import { createMessageProcessor, type MessageProcessor } from './message-processor.ts';

/**
 * The id this instance goes by in traces, logs, metrics and request claims:
 * PUSHLINE_PROCESSOR_INSTANCE_ID, else `<hostname>-<pid>-<random>`. Draw it once per process.
 */
export function processorInstanceId(config: MessageProcessorConfig): string {
  return (
    config.PUSHLINE_PROCESSOR_INSTANCE_ID ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`
  );
}

/** `logger` without an instanceId field: the assembly adds it to every line. */
export interface AssembleMessageProcessorOptions extends AssemblyOptions {
  /** Default: `processorInstanceId(config)`. */
  readonly instanceId?: string;
  /** The caller's, and left open by `close()`. Default: a client on PUSHLINE_REDIS_URL, owned. */
  readonly redis?: RedisClient;
  /** Default: a client on PUSHLINE_KAFKA_BROKERS. */
  readonly kafka?: KafkaClient;
}

/** A message processor with everything it runs on, wired the way the deployed process runs. */
export interface AssembledMessageProcessor extends Component {
  readonly processor: MessageProcessor;
  readonly instanceId: string;
  readonly redis: RedisClient;
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
  const { redis, owned: ownedRedis } = serviceRedis(options.redis, config, logger);
  const kafka = options.kafka ?? serviceKafkaClient(config, 'message-processor', logger);
  const metrics =
    options.metrics ?? createMetricsRegistry({ service: 'message-processor', instance_id: instanceId });
  const processor = createMessageProcessor({
    config,
    instanceId,
    redis,
    kafka,
    logger: options.logger,
    metrics,
    tracer: options.tracer ?? trace.getTracer('pushline-message-processor'),
  });

  return {
    processor,
    instanceId,
    redis,
    kafka,
    metrics,
    ...assemblyLifecycle({
      logger,
      tracing: options.tracing,
      async start() {
        await ownedRedis?.connect();
        await ensurePlatformTopics(
          kafka,
          topicNames(config.PUSHLINE_TOPIC_PREFIX),
          config.PUSHLINE_KAFKA_PARTITIONS,
        );
        await processor.start();
      },
      steps: [
        // Bounded by its own steps, each of which is bounded.
        { name: 'message processor', run: () => processor.close(), timeoutMs: Infinity },
        { name: 'redis', run: () => closeRedis(ownedRedis) },
      ],
    }),
  };
}
