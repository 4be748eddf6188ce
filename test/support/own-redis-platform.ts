import type { Socket } from 'socket.io-client';
import {
  connectionServerEnv,
  messageProcessorEnv,
  parseEnv,
  pushApiEnv,
  topicNames,
  type ConnectionServerConfig,
} from '@pushline/config';
import {
  assembleConnectionServer,
  type AssembledConnectionServer,
  type ConnectionServer,
} from '@pushline/connection-server';
import { ensurePlatformTopics, type KafkaClient } from '@pushline/kafka';
import { assembleMessageProcessor, type AssembledMessageProcessor } from '@pushline/message-processor';
import { assemblePushApi, type AssembledPushApi } from '@pushline/push-api';
import { closeRedis, RedisDeviceRegistry, serviceRedis } from '@pushline/registry';
import { runCleanup, type CleanupStep } from '@pushline/runtime';
import { createLogger, silentLogger, type Logger } from '@pushline/telemetry';
import { testInfra, testKafkaClient, testSecret, uniquePrefix } from '@pushline/testkit';
import { connectDevice, type DeviceBehaviour, type TestDevice } from './devices.ts';

/**
 * Connection servers and a push-api in this process that create their own Redis clients from
 * their config, as the deployed processes do (test/support/platform.ts hands every service one
 * shared client instead), on a Redis the test owns and may stop, restart or SIGSTOP.
 */

function testLogger(service: string): Logger {
  const level = process.env['PUSHLINE_TEST_LOG'];
  return level ? createLogger({ service, level }) : silentLogger();
}

export interface OwnRedisPlatform {
  readonly prefix: string;
  readonly servers: readonly AssembledConnectionServer[];
  readonly api: AssembledPushApi;
  /** Started when asked for (`processor: true`), on its own Redis client like the others. */
  readonly processor: AssembledMessageProcessor | undefined;
  readonly topics: ReturnType<typeof topicNames>;
  readonly kafka: KafkaClient;
  /** A registry on a client configured like the services' (bounded commands), owned here. */
  readonly registry: RedisDeviceRegistry;
  /** Settings every service of this platform shares (Kafka, this Redis, prefixes, token), for child processes. */
  readonly serviceEnv: Readonly<Record<string, string>>;
  /** HS256 secret the connection servers verify device tokens with. */
  readonly jwtSecret: string;
  /** To a server in this process, or to one running as a child process (its id and device URL). */
  connect(
    server: AssembledConnectionServer | Pick<ConnectionServer, 'serverId' | 'deviceUrl'>,
    deviceId: string,
    options?: { behaviour?: DeviceBehaviour; topics?: string[]; userId?: string },
  ): Promise<TestDevice>;
  /** Calls the API with the admin key; `timeoutMs` bounds the wait for an answer. */
  call(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs?: number,
  ): Promise<{ status: number; contentType: string; body: unknown }>;
  close(): Promise<void>;
}

export async function startOwnRedisPlatform(
  label: string,
  redisUrl: string,
  options: { servers?: number; processor?: boolean; env?: Record<string, string> } = {},
): Promise<OwnRedisPlatform> {
  const prefix = uniquePrefix(label);
  const topics = topicNames(`${prefix}.`);
  const jwtSecret = testSecret();
  const apiKey = `k-${testSecret()}`;
  const common = {
    PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
    PUSHLINE_REDIS_URL: redisUrl,
    PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
    PUSHLINE_KEY_PREFIX: `${prefix}:`,
    PUSHLINE_KAFKA_PARTITIONS: '3',
    PUSHLINE_INTERNAL_TOKEN: testSecret(),
    PUSHLINE_LOG_LEVEL: process.env['PUSHLINE_TEST_LOG'] ?? 'silent',
    ...options.env,
  };
  const kafka: KafkaClient = testKafkaClient(`${prefix}-platform`);
  const sockets: Socket[] = [];
  const steps: CleanupStep[] = [];
  const close = () => runCleanup([...steps].reverse());
  try {
    await ensurePlatformTopics(kafka, topics, 3);
    const apiConfig = parseEnv(pushApiEnv, {
      ...common,
      PUSHLINE_API_HOST: '127.0.0.1',
      PUSHLINE_API_PORT: '0',
      PUSHLINE_API_OPS_PORT: '0',
      PUSHLINE_API_KEYS: `${apiKey}:admin`,
    });
    const { redis: registryRedis, owned } = serviceRedis(undefined, apiConfig, testLogger('registry'));
    steps.push({ name: 'registry redis', run: () => closeRedis(owned) });
    await owned?.connect();
    const registry = new RedisDeviceRegistry({ redis: registryRedis, keyPrefix: common.PUSHLINE_KEY_PREFIX });

    const api = assemblePushApi(apiConfig, {
      kafka,
      logger: testLogger('push-api'),
      // No negative caching: tests connect devices and push at once.
      locator: { negativeTtlMs: 1 },
    });
    steps.push({ name: 'push-api', run: () => api.close() });
    await api.start();

    const servers: AssembledConnectionServer[] = [];
    for (let i = 0; i < (options.servers ?? 1); i++) {
      const config: ConnectionServerConfig = parseEnv(connectionServerEnv, {
        ...common,
        PUSHLINE_SERVER_ID: `${prefix}-cs-${i + 1}`,
        PUSHLINE_HOST: '127.0.0.1',
        PUSHLINE_PORT: '0',
        PUSHLINE_INTERNAL_PORT: '0',
        PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
        PUSHLINE_CLOSE_GRACE_MS: '100',
        PUSHLINE_DRAIN_WINDOW_MS: '100',
      });
      const assembled = assembleConnectionServer(config, { kafka, logger: testLogger('connection-server') });
      steps.push({ name: config.PUSHLINE_SERVER_ID ?? 'connection server', run: () => assembled.close() });
      await assembled.start();
      servers.push(assembled);
    }
    let processor: AssembledMessageProcessor | undefined;
    if (options.processor) {
      const assembled = assembleMessageProcessor(
        parseEnv(messageProcessorEnv, {
          ...common,
          PUSHLINE_PROCESSOR_GROUP_ID: `${prefix}-processors`,
          PUSHLINE_PROCESSOR_INSTANCE_ID: `${prefix}-mp`,
          PUSHLINE_PROCESSOR_PORT: '0',
          PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: '6000',
        }),
        { kafka, logger: testLogger('message-processor') },
      );
      steps.push({ name: 'message-processor', run: () => assembled.close() });
      await assembled.start();
      processor = assembled;
    }
    // Devices go before the servers close, so their disconnects are ordinary ones.
    steps.push({
      name: 'devices',
      run: () => {
        for (const s of sockets) s.disconnect();
      },
    });

    return {
      prefix,
      servers,
      api,
      processor,
      topics,
      kafka,
      registry,
      serviceEnv: common,
      jwtSecret,
      connect: (server, deviceId, connectOptions = {}) =>
        connectDevice({
          server: 'server' in server ? server.server : server,
          registry,
          jwtSecret,
          deviceId,
          userId: connectOptions.userId ?? `${deviceId}-user`,
          ...(connectOptions.behaviour ? { behaviour: connectOptions.behaviour } : {}),
          ...(connectOptions.topics ? { claims: { topics: connectOptions.topics } } : {}),
          track: (socket) => sockets.push(socket),
        }),
      async call(method, path, body, timeoutMs = 15_000) {
        const res = await fetch(`${api.url}${path}`, {
          method,
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          signal: AbortSignal.timeout(timeoutMs),
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        const text = await res.text();
        return {
          status: res.status,
          contentType: res.headers.get('content-type') ?? '',
          body: text ? (JSON.parse(text) as unknown) : undefined,
        };
      },
      close,
    };
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }
}
