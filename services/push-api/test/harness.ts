import { randomBytes } from 'node:crypto';
import { parseEnv, pushApiEnv, topicNames, type TopicNames } from '@pushline/config';
import type { KafkaClient } from '@pushline/kafka';
import type { RedisClient, RedisDeviceRegistry } from '@pushline/registry';
import { runCleanup, type CleanupStep } from '@pushline/runtime';
import { silentLogger, type Registry } from '@pushline/telemetry';
import { testInfra, testSecret, uniquePrefix } from '@pushline/testkit';
import { assemblePushApi, type PushApi } from '../src/index.ts';

interface ApiKeys {
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
  /** The ops port: /healthz, /readyz, /metrics. */
  readonly opsUrl: string;
  readonly prefix: string;
  readonly keyPrefix: string;
  readonly topics: TopicNames;
  readonly keys: ApiKeys;
  readonly redis: RedisClient;
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
    ...infra.redisEnv,
    PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
    PUSHLINE_KEY_PREFIX: keyPrefix,
    PUSHLINE_KAFKA_PARTITIONS: '3',
    PUSHLINE_INTERNAL_TOKEN: internalToken,
    PUSHLINE_API_HOST: '127.0.0.1',
    PUSHLINE_API_PORT: '0',
    PUSHLINE_API_OPS_HOST: '127.0.0.1',
    PUSHLINE_API_OPS_PORT: '0',
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
  const assembled = assemblePushApi(config, { logger: silentLogger() });
  const steps: CleanupStep[] = [];
  await assembled.start();
  const { api, redis, registry, kafka, metrics } = assembled;
  return {
    api,
    url: api.url,
    opsUrl: api.opsUrl,
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
    close: () => runCleanup([...steps.reverse(), { name: 'push-api', run: () => assembled.close() }]),
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
