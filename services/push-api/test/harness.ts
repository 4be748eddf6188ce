import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { parseEnv, pushApiEnv, topicNames, type TopicNames } from '@pushline/config';
import { DeviceLocator, HttpDeliveryTransport, MessageRouter } from '@pushline/delivery';
import type { KafkaClient } from '@pushline/kafka';
import { RedisDeviceRegistry } from '@pushline/registry';
import { runCleanup, type CleanupStep } from '@pushline/runtime';
import { createMetricsRegistry, silentLogger, trace, type Registry, type Tracer } from '@pushline/telemetry';
import { testInfra, testKafkaClient, testSecret, uniquePrefix } from '@pushline/testkit';
import { createPushApi, type OfflineMessageStore, type PushApi, type PushRouter } from '../src/index.ts';

export interface ApiKeys {
  readonly admin: string;
  readonly push: string;
  readonly publish: string;
  readonly presence: string;
  /** push+presence, no publish. */
  readonly pushPresence: string;
}

export interface ApiHarness {
  readonly api: PushApi;
  readonly url: string;
  readonly prefix: string;
  readonly keyPrefix: string;
  readonly topics: TopicNames;
  readonly keys: ApiKeys;
  readonly redis: Redis;
  readonly registry: RedisDeviceRegistry;
  readonly kafka: KafkaClient;
  readonly metrics: Registry;
  readonly internalToken: string;
  /** Adds a cleanup step run (before the API's own) by `close()`. */
  defer(step: CleanupStep): void;
  close(): Promise<void>;
}

export interface ApiHarnessOptions {
  readonly label: string;
  readonly env?: Record<string, string>;
  /** Default: a MessageRouter over the real registry with an HTTP transport. */
  readonly router?: (deps: {
    registry: RedisDeviceRegistry;
    internalToken: string;
    tracer: Tracer;
  }) => PushRouter;
  readonly offlineStore?: (deps: { redis: Redis; keyPrefix: string }) => OfflineMessageStore;
  readonly tracer?: Tracer;
  /** Shared with connection servers started by the test. */
  readonly prefix?: string;
  readonly internalToken?: string;
}

const key = (label: string) => `k-${label}-${randomBytes(12).toString('hex')}`;

/** A push-api on port 0 against the real Kafka and Redis of the test run, with its own prefix. */
export async function startApi(options: ApiHarnessOptions): Promise<ApiHarness> {
  const infra = testInfra();
  const prefix = options.prefix ?? uniquePrefix(options.label);
  const keyPrefix = `${prefix}:`;
  const topics = topicNames(`${prefix}.`);
  const internalToken = options.internalToken ?? testSecret();
  const keys: ApiKeys = {
    admin: key('admin'),
    push: key('push'),
    publish: key('publish'),
    presence: key('presence'),
    pushPresence: key('pp'),
  };
  const config = parseEnv(pushApiEnv, {
    PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
    PUSHLINE_REDIS_URL: infra.redisUrl,
    PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
    PUSHLINE_KEY_PREFIX: keyPrefix,
    PUSHLINE_KAFKA_PARTITIONS: '3',
    PUSHLINE_INTERNAL_TOKEN: internalToken,
    PUSHLINE_API_HOST: '127.0.0.1',
    PUSHLINE_API_PORT: '0',
    PUSHLINE_API_KEYS: [
      `${keys.admin}:admin`,
      `${keys.push}:push`,
      `${keys.publish}:publish`,
      `${keys.presence}:presence`,
      `${keys.pushPresence}:push+presence`,
    ].join(','),
    PUSHLINE_LOG_LEVEL: 'silent',
    ...options.env,
  });
  const redis = new Redis(infra.redisUrl);
  const registry = new RedisDeviceRegistry({ redis, keyPrefix });
  const kafka = testKafkaClient(`push-api-${prefix}`);
  const metrics = createMetricsRegistry({ service: 'push-api' }, false);
  const tracer = options.tracer ?? trace.getTracer('pushline-push-api');
  const logger = silentLogger();
  const steps: CleanupStep[] = [];
  let transport: HttpDeliveryTransport | undefined;
  const router =
    options.router?.({ registry, internalToken, tracer }) ??
    (() => {
      transport = new HttpDeliveryTransport({ internalToken, logger });
      // No negative caching: tests connect devices and push at once.
      const locator = new DeviceLocator({ registry, negativeTtlMs: 1 });
      return new MessageRouter({ locator, registry, transport, tracer, logger });
    })();
  const api = createPushApi({
    config,
    redis,
    registry,
    router,
    kafka,
    offlineStore: options.offlineStore?.({ redis, keyPrefix }),
    logger,
    metrics,
    tracer,
  });
  const close = async () => {
    await runCleanup([
      ...steps.reverse(),
      { name: 'api', run: () => api.close() },
      { name: 'transport', run: () => transport?.close() },
      { name: 'redis', run: () => redis.quit().then(() => undefined) },
    ]);
  };
  try {
    await api.start();
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
  return {
    api,
    url: api.url,
    prefix,
    keyPrefix,
    topics,
    keys,
    redis,
    registry,
    kafka,
    metrics,
    internalToken,
    defer: (step) => steps.push(step),
    close,
  };
}

export interface CallOptions {
  readonly key?: string | undefined;
  readonly body?: unknown;
  readonly rawBody?: string;
  readonly headers?: Record<string, string>;
}

export interface CallResult {
  readonly status: number;
  readonly headers: Headers;
  readonly contentType: string;
  readonly body: unknown;
}

/** One HTTP call over real loopback with global fetch; parses JSON bodies. */
export async function call(
  base: string,
  method: string,
  path: string,
  options: CallOptions = {},
): Promise<CallResult> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key) headers['authorization'] = `Bearer ${options.key}`;
  let body: string | undefined;
  if (options.rawBody !== undefined) body = options.rawBody;
  else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(`${base}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  const contentType = res.headers.get('content-type') ?? '';
  return {
    status: res.status,
    headers: res.headers,
    contentType,
    body: contentType.includes('json') && text.length > 0 ? (JSON.parse(text) as unknown) : text,
  };
}
