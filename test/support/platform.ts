import type { Socket } from 'socket.io-client';
import {
  canaryEnv,
  connectionServerEnv,
  messageProcessorEnv,
  parseEnv,
  pushApiEnv,
  topicNames,
  type TopicNames,
} from '@pushline/config';
import { assembleCanary, type AssembledCanary } from '@pushline/canary';
import { assembleConnectionServer, type ConnectionServer } from '@pushline/connection-server';
import { ensurePlatformTopics, type KafkaClient } from '@pushline/kafka';
import { assembleMessageProcessor, type MessageProcessor } from '@pushline/message-processor';
import { assemblePushApi, type AssembledPushApi } from '@pushline/push-api';
import { RedisDeviceRegistry } from '@pushline/registry';
import { runCleanup, type CleanupStep } from '@pushline/runtime';
import {
  createLogger,
  parsePrometheusText,
  silentLogger,
  type Logger,
  type PromFamily,
  type ReadableSpan,
} from '@pushline/telemetry';
import {
  testInfra,
  testKafkaClient,
  testRedis,
  testSecret,
  uniquePrefix,
  waitUntil,
} from '@pushline/testkit';
import { connectDevice, type DeviceBehaviour, type TestDevice } from './devices.ts';

/**
 * The whole platform in this process, each service built by the composition root its main.ts
 * uses (each instance with its own metrics registry), on the run's real Kafka and Redis, with
 * real socket.io-client devices. The test process registers the tracer provider, so every
 * service's spans land in one recorder.
 */

function testLogger(service: string): Logger {
  const level = process.env['PUSHLINE_TEST_LOG'];
  return level ? createLogger({ service, level }) : silentLogger();
}

export type { TestDevice };

export interface ScrapedService {
  readonly name: string;
  readonly url: string;
  readonly text: string;
  readonly families: PromFamily[];
}

export interface PlatformOptions {
  /** Connection servers. Default 2. */
  readonly servers?: number;
  /** Whether to run a message processor (and wait until its group is joined). Default true. */
  readonly processor?: boolean;
  /** PUSHLINE_DELIVERY_TIMEOUT_MS of every service. Default 3000. */
  readonly deliveryTimeoutMs?: number;
  /** Whether to run the canary (probing every second). Default false. */
  readonly canary?: boolean;
  /** Kafka to run on instead of the run's broker (a cluster the test started). */
  readonly kafkaBrokers?: readonly string[];
  /** Topic and key prefix, when the test made (and created topics with) its own. Default: unique to `label`. */
  readonly prefix?: string;
  /** Redis to run on instead of the run's (a cluster the test started: its nodes, and the URL of one). */
  readonly redis?: { readonly redisUrl: string; readonly redisClusterNodes: readonly string[] | undefined };
}

export interface Platform {
  readonly prefix: string;
  readonly topics: TopicNames;
  readonly kafka: KafkaClient;
  readonly registry: RedisDeviceRegistry;
  /** The push-api, with the router its direct pushes go through. */
  readonly api: AssembledPushApi;
  readonly servers: readonly ConnectionServer[];
  /** Absent with `processor: false`. */
  readonly processor: MessageProcessor | undefined;
  /** Settings every service of this platform shares (prefixes, Kafka, Redis, internal token), for child processes. */
  readonly serviceEnv: Readonly<Record<string, string>>;
  /** HS256 secret the connection servers verify device tokens with. */
  readonly jwtSecret: string;
  /** The admin API key. */
  readonly apiKey: string;
  /** The canary, once started (`canary: true` or `startCanary()`). */
  readonly canary: AssembledCanary | undefined;
  /** Starts the canary (probing every second); it is closed with the platform. */
  startCanary(): Promise<AssembledCanary>;
  connect(
    server: ConnectionServer,
    deviceId: string,
    userId: string,
    behaviour?: DeviceBehaviour,
  ): Promise<TestDevice>;
  /** Calls the API with the admin key. */
  call(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }>;
  /** GET /metrics of every service instance, parsed strictly. */
  scrape(): Promise<ScrapedService[]>;
  close(): Promise<void>;
}

export async function startPlatform(label: string, options: PlatformOptions = {}): Promise<Platform> {
  const infra = testInfra();
  const prefix = options.prefix ?? uniquePrefix(label);
  const topics = topicNames(`${prefix}.`);
  const internalToken = testSecret();
  const jwtSecret = testSecret();
  const apiKey = `k-${testSecret()}`;
  const deliveryTimeoutMs = String(options.deliveryTimeoutMs ?? 3000);
  const brokers = options.kafkaBrokers ?? infra.kafkaBrokers;
  const redisInfra = options.redis
    ? { redisUrl: options.redis.redisUrl, redisClusterNodes: options.redis.redisClusterNodes?.slice() }
    : infra;
  const common = {
    PUSHLINE_KAFKA_BROKERS: brokers.join(','),
    PUSHLINE_REDIS_URL: redisInfra.redisUrl,
    ...(redisInfra.redisClusterNodes
      ? { PUSHLINE_REDIS_CLUSTER_NODES: redisInfra.redisClusterNodes.join(',') }
      : {}),
    PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
    PUSHLINE_KEY_PREFIX: `${prefix}:`,
    PUSHLINE_KAFKA_PARTITIONS: '3',
    PUSHLINE_INTERNAL_TOKEN: internalToken,
    PUSHLINE_DELIVERY_TIMEOUT_MS: deliveryTimeoutMs,
    PUSHLINE_LOG_LEVEL: process.env['PUSHLINE_TEST_LOG'] ?? 'silent',
  };
  // One Redis and one Kafka client for every service (theirs to use, ours to close).
  const redis = testRedis({}, redisInfra);
  const kafka = testKafkaClient(`${prefix}-platform`, brokers);
  const clients = { redis, kafka };
  const registry = new RedisDeviceRegistry({ redis, keyPrefix: common.PUSHLINE_KEY_PREFIX });
  const steps: CleanupStep[] = [];
  const close = async () => {
    await runCleanup([...steps.reverse(), { name: 'redis', run: () => redis.quit().then(() => undefined) }]);
  };
  const scrapeTargets: { name: string; url: () => string }[] = [];
  const servers: ConnectionServer[] = [];
  const sockets: Socket[] = [];

  try {
    await ensurePlatformTopics(kafka, topics, 3);

    const api = assemblePushApi(
      parseEnv(pushApiEnv, {
        ...common,
        PUSHLINE_API_HOST: '127.0.0.1',
        PUSHLINE_API_PORT: '0',
        PUSHLINE_API_OPS_HOST: '127.0.0.1',
        PUSHLINE_API_OPS_PORT: '0',
        PUSHLINE_API_KEYS: `${apiKey}:admin`,
      }),
      { ...clients, logger: testLogger('push-api') },
    );
    steps.push({ name: 'push-api', run: () => api.close() });
    await api.start();
    scrapeTargets.push({ name: 'push-api', url: () => api.opsUrl });

    for (let i = 0; i < (options.servers ?? 2); i++) {
      const serverId = `${prefix}-cs-${i + 1}`;
      const assembled = assembleConnectionServer(
        parseEnv(connectionServerEnv, {
          ...common,
          PUSHLINE_SERVER_ID: serverId,
          PUSHLINE_HOST: '127.0.0.1',
          PUSHLINE_PORT: '0',
          PUSHLINE_INTERNAL_PORT: '0',
          PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
          PUSHLINE_CLOSE_GRACE_MS: '100',
          PUSHLINE_DRAIN_WINDOW_MS: '100',
        }),
        { ...clients, logger: testLogger('connection-server') },
      );
      steps.push({ name: serverId, run: () => assembled.close() });
      await assembled.start();
      servers.push(assembled.server);
      scrapeTargets.push({ name: serverId, url: () => assembled.server.internalUrl });
    }
    // Devices go before the servers close, so their disconnects are ordinary ones.
    steps.push({
      name: 'devices',
      run: () => {
        for (const s of sockets) s.disconnect();
      },
    });

    let processor: MessageProcessor | undefined;
    if (options.processor ?? true) {
      const assembled = assembleMessageProcessor(
        parseEnv(messageProcessorEnv, {
          ...common,
          PUSHLINE_PROCESSOR_GROUP_ID: `${prefix}-processors`,
          PUSHLINE_PROCESSOR_INSTANCE_ID: `${prefix}-mp`,
          PUSHLINE_PROCESSOR_PORT: '0',
          PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: '6000',
        }),
        { ...clients, logger: testLogger('message-processor') },
      );
      steps.push({ name: 'message-processor', run: () => assembled.close() });
      await assembled.start();
      const { opsUrl } = (processor = assembled.processor);
      scrapeTargets.push({ name: 'message-processor', url: () => opsUrl });
      await waitUntil(async () => (await fetch(`${opsUrl}/readyz`)).ok, {
        timeoutMs: 30_000,
        what: 'message processor ready (group joined)',
      });
    }

    let canary: AssembledCanary | undefined;
    const startCanary = async () => {
      if (canary) return canary;
      const assembled = assembleCanary(
        parseEnv(canaryEnv, {
          ...common,
          PUSHLINE_PROCESSOR_GROUP_ID: `${prefix}-processors`,
          PUSHLINE_CANARY_API_URL: api.url,
          PUSHLINE_CANARY_API_KEY: apiKey,
          PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
          PUSHLINE_CANARY_PORT: '0',
          PUSHLINE_CANARY_INTERVAL_MS: '1000',
        }),
        { ...clients, logger: testLogger('canary') },
      );
      steps.push({ name: 'canary', run: () => assembled.close() });
      await assembled.start();
      canary = assembled;
      scrapeTargets.push({ name: 'canary', url: () => assembled.opsUrl });
      return assembled;
    };
    if (options.canary) await startCanary();

    const connect: Platform['connect'] = (server, deviceId, userId, behaviour) =>
      connectDevice({
        server,
        registry,
        jwtSecret,
        deviceId,
        userId,
        ...(behaviour ? { behaviour } : {}),
        track: (socket) => sockets.push(socket),
      });

    const call: Platform['call'] = async (method, path, body) => {
      const res = await fetch(`${api.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
    };

    const scrape = () =>
      Promise.all(
        scrapeTargets.map(async (t) => {
          const url = `${t.url()}/metrics`;
          const res = await fetch(url);
          if (!res.ok) throw new Error(`${url} answered ${res.status}`);
          const contentType = res.headers.get('content-type') ?? '';
          if (!contentType.startsWith('text/plain')) throw new Error(`${url} content-type ${contentType}`);
          const text = await res.text();
          return { name: t.name, url, text, families: parsePrometheusText(text) };
        }),
      );

    return {
      prefix,
      topics,
      kafka,
      registry,
      api,
      servers,
      processor,
      serviceEnv: common,
      jwtSecret,
      apiKey,
      get canary() {
        return canary;
      },
      startCanary,
      connect,
      call,
      scrape,
      close,
    };
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
}

/** The spans of one trace, keyed by span id. */
export function spansOfTrace(spans: readonly ReadableSpan[], traceId: string): Map<string, ReadableSpan> {
  return new Map(
    spans.filter((s) => s.spanContext().traceId === traceId).map((s) => [s.spanContext().spanId, s]),
  );
}

/** Walks parent links from `span` to the root; throws if a parent is missing from the trace. */
export function pathToRoot(trace: Map<string, ReadableSpan>, span: ReadableSpan): ReadableSpan[] {
  const path = [span];
  let current = span;
  while (current.parentSpanContext) {
    const parent = trace.get(current.parentSpanContext.spanId);
    if (!parent) throw new Error(`span "${current.name}" has a parent that is not in the trace`);
    path.push(parent);
    current = parent;
  }
  return path;
}

/** Asserts the trace is one tree: exactly one root, every other span's parent in the trace. Returns the root. */
export function rootOf(trace: Map<string, ReadableSpan>): ReadableSpan {
  const roots = [...trace.values()].filter((s) => !s.parentSpanContext);
  if (roots.length !== 1)
    throw new Error(`trace has ${roots.length} roots: ${roots.map((r) => r.name).join(', ')}`);
  for (const span of trace.values()) pathToRoot(trace, span);
  return roots[0] as ReadableSpan;
}

/** `name (scope)` lines, root first, for assertion messages. */
export function describeTrace(trace: Map<string, ReadableSpan>): string {
  return [...trace.values()]
    .sort((a, b) => a.startTime[0] - b.startTime[0] || a.startTime[1] - b.startTime[1])
    .map((s) => `${s.name} [${s.instrumentationScope.name}]`)
    .join('\n');
}
