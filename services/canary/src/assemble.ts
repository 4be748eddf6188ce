import { hostname } from 'node:os';
import { topicNames, type CanaryConfig } from '@pushline/config';
import { createKafkaClient, type Admin, type KafkaClient } from '@pushline/kafka';
import { RedisDeviceRegistry, closeRedis, serviceRedis, type RedisClient } from '@pushline/registry';
import { OpsServer, assemblyLifecycle, type AssemblyOptions, type Component } from '@pushline/runtime';
import { createMetricsRegistry, trace, type Registry } from '@pushline/telemetry';
import { Canary } from './canary.ts';
import { CanaryMetrics } from './metrics.ts';

/** The id this canary goes by in logs and metrics. */
export function canaryInstanceId(config: CanaryConfig): string {
  return `${hostname()}-${config.PUSHLINE_CANARY_PORT}-${process.pid}`;
}

export interface AssembleCanaryOptions extends AssemblyOptions {
  /** The caller's, left open by `close()`. Default: a client on PUSHLINE_REDIS_URL, owned. */
  readonly redis?: RedisClient;
  /** Default: a client on PUSHLINE_KAFKA_BROKERS. */
  readonly kafka?: KafkaClient;
}

export interface AssembledCanary extends Component {
  readonly canary: Canary;
  /** Base URL of the ops port (/healthz, /readyz, /metrics), after start. */
  readonly opsUrl: string;
  readonly metrics: Registry;
}

/** The composition root of the canary, used by main.ts and by tests alike. */
export function assembleCanary(config: CanaryConfig, options: AssembleCanaryOptions): AssembledCanary {
  const { logger } = options;
  const topics = topicNames(config.PUSHLINE_TOPIC_PREFIX);
  const { redis, owned: ownedRedis } = serviceRedis(options.redis, config, logger);
  // No retries inside the client: every round reads the lag again, and a retry loop must not
  // outlive close() (kafkajs reconnects for it after the admin client disconnected).
  const kafka =
    options.kafka ??
    createKafkaClient({
      brokers: config.PUSHLINE_KAFKA_BROKERS,
      clientId: `${config.PUSHLINE_KAFKA_CLIENT_ID}-canary`,
      logger,
      retries: 0,
    });
  const metrics =
    options.metrics ?? createMetricsRegistry({ service: 'canary', instance_id: canaryInstanceId(config) });
  let admin: Admin | undefined;
  const canary = new Canary({
    registry: new RedisDeviceRegistry({ redis, keyPrefix: config.PUSHLINE_KEY_PREFIX }),
    admin: {
      groupLagByPartition: (group, topic) => (admin ??= kafka.admin()).groupLagByPartition(group, topic),
    },
    apiUrl: config.PUSHLINE_CANARY_API_URL.replace(/\/+$/, ''),
    apiKey: config.PUSHLINE_CANARY_API_KEY,
    jwt: {
      secret: config.PUSHLINE_DEVICE_JWT_SECRET,
      ...(config.PUSHLINE_DEVICE_JWT_ISSUER === undefined
        ? {}
        : { issuer: config.PUSHLINE_DEVICE_JWT_ISSUER }),
      ...(config.PUSHLINE_DEVICE_JWT_AUDIENCE === undefined
        ? {}
        : { audience: config.PUSHLINE_DEVICE_JWT_AUDIENCE }),
    },
    lag: { group: config.PUSHLINE_PROCESSOR_GROUP_ID, topic: topics.pushRequests },
    devicePrefix: config.PUSHLINE_CANARY_DEVICE_PREFIX,
    intervalMs: config.PUSHLINE_CANARY_INTERVAL_MS,
    timeoutMs: config.PUSHLINE_CANARY_TIMEOUT_MS,
    forgetAfterMs: config.PUSHLINE_CANARY_FORGET_AFTER_MS,
    metrics: new CanaryMetrics(metrics),
    tracer: options.tracer ?? trace.getTracer('pushline-canary'),
    logger,
  });
  const ops = new OpsServer({
    host: config.PUSHLINE_CANARY_HOST,
    port: config.PUSHLINE_CANARY_PORT,
    metrics,
    ready: () =>
      Promise.resolve({
        ok: canary.ready,
        detail: { servers: canary.servers },
      }),
  });

  return {
    canary,
    metrics,
    get opsUrl() {
      return ops.url;
    },
    ...assemblyLifecycle({
      logger,
      tracing: options.tracing,
      async start() {
        await ops.start();
        await ownedRedis?.connect();
        await canary.start();
        logger.info({ opsUrl: ops.url, apiUrl: config.PUSHLINE_CANARY_API_URL }, 'canary started');
      },
      steps: [
        { name: 'canary', run: () => canary.close() },
        { name: 'ops server', run: () => ops.close() },
        { name: 'kafka admin', run: () => admin?.close() },
        { name: 'redis', run: () => closeRedis(ownedRedis) },
      ],
    }),
  };
}
