import { connectionServerEnv, parseEnv, topicNames, type ConnectionServerConfig } from '@pushline/config';
import { ensurePlatformTopics, type KafkaClient } from '@pushline/kafka';
import { RedisDeviceRegistry, type RedisClient } from '@pushline/registry';
import { createLogger, silentLogger, type Registry } from '@pushline/telemetry';
import { testInfra, testKafkaClient, testRedis, testSecret, uniquePrefix, within } from '@pushline/testkit';
import { SignJWT } from 'jose';
import { WebSocket } from 'ws';
import { io, type ManagerOptions, type Socket as ClientSocket, type SocketOptions } from 'socket.io-client';
import {
  assembleConnectionServer,
  type AssembledConnectionServer,
  type ConnectionServer,
} from '@pushline/connection-server';
import type { OfflineInbox } from '@pushline/offline-store';

export type { ClientSocket };

/** One test's isolated world: its own topic/key prefix, secrets, Redis and Kafka clients. */
export interface TestWorld {
  /** Unique to the test: Redis keys and ids. */
  readonly prefix: string;
  /** Kafka topic prefix, shared by the tests of one file. */
  readonly topicPrefix: string;
  readonly jwtSecret: string;
  readonly internalToken: string;
  readonly redis: RedisClient;
  readonly kafka: KafkaClient;
  readonly registry: RedisDeviceRegistry;
  /** The environment a server of this world runs with (plus per-server overrides). */
  env(overrides?: Record<string, string>): Record<string, string>;
  startServer(options?: {
    env?: Record<string, string>;
    /** Default: the Redis offline store, as deployed. */
    deps?: { inbox?: OfflineInbox };
  }): Promise<{
    server: ConnectionServer;
    config: ConnectionServerConfig;
    metrics: Registry;
    agent: AssembledConnectionServer['agent'];
  }>;
  token(
    claims: { sub: string; uid?: string; tid?: string; topics?: string[] },
    expiresIn?: string,
  ): Promise<string>;
  /** Connects a device and resolves once the server accepted it. */
  connect(
    url: string,
    token: string | undefined,
    options?: Partial<ManagerOptions & SocketOptions>,
    /** Runs before the connection, e.g. to install handlers for what arrives right after it. */
    setup?: (socket: ClientSocket) => void,
  ): Promise<ClientSocket>;
  /** Closes every server, device and client this world opened. */
  close(): Promise<void>;
}

/**
 * Kafka topics are created once per test file (each file runs in its own process) rather than
 * per test: creating topics is the slowest step of a test, and every test still isolates its
 * Redis keys and device ids with its own prefix.
 */
let sharedTopics: Promise<string> | undefined;
function topicPrefix(): Promise<string> {
  return (sharedTopics ??= (async () => {
    const topicsPrefix = `${uniquePrefix('cs')}.`;
    await ensurePlatformTopics(testKafkaClient('connection-server-test-admin'), topicNames(topicsPrefix), 3);
    return topicsPrefix;
  })());
}

export async function createWorld(label: string): Promise<TestWorld> {
  const topics = await topicPrefix();
  const prefix = uniquePrefix(label);
  const jwtSecret = testSecret();
  const internalToken = testSecret();
  // Configured like the client the deployed server creates for itself.
  const redis = testRedis({ enableAutoPipelining: true });
  const kafka = testKafkaClient(`${prefix}-client`);
  const registry = new RedisDeviceRegistry({ redis, keyPrefix: `${prefix}:` });
  const servers: AssembledConnectionServer[] = [];
  const sockets: ClientSocket[] = [];
  const logger =
    process.env['PUSHLINE_TEST_LOG'] !== undefined
      ? createLogger({ service: 'connection-server-test', level: process.env['PUSHLINE_TEST_LOG'] })
      : silentLogger();

  const env = (overrides: Record<string, string> = {}) => ({
    PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
    ...testInfra().redisEnv,
    PUSHLINE_TOPIC_PREFIX: topics,
    PUSHLINE_KEY_PREFIX: `${prefix}:`,
    PUSHLINE_INTERNAL_TOKEN: internalToken,
    PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
    PUSHLINE_HOST: '127.0.0.1',
    PUSHLINE_PORT: '0',
    PUSHLINE_INTERNAL_PORT: '0',
    PUSHLINE_CLOSE_GRACE_MS: '200',
    PUSHLINE_DRAIN_WINDOW_MS: '500',
    PUSHLINE_LOG_LEVEL: 'silent',
    ...overrides,
  });

  return {
    prefix,
    topicPrefix: topics,
    jwtSecret,
    internalToken,
    redis,
    kafka,
    registry,
    env,
    async startServer(opts = {}) {
      const config = parseEnv(
        connectionServerEnv,
        env({ PUSHLINE_SERVER_ID: `srv-${servers.length}`, ...opts.env }),
      );
      const assembled = assembleConnectionServer(config, { logger, redis, kafka, ...opts.deps });
      servers.push(assembled);
      await assembled.start();
      const { server, metrics, agent } = assembled;
      return { server, config, metrics, agent };
    },
    async token(claims, expiresIn = '10m') {
      const { sub, ...rest } = claims;
      return new SignJWT({ uid: 'user-1', ...rest })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime(expiresIn)
        .sign(new TextEncoder().encode(jwtSecret));
    },
    async connect(url, token, socketOptions = {}, setup) {
      const socket = io(url, {
        transports: ['websocket'],
        reconnection: false,
        ...(token !== undefined ? { auth: { token } } : {}),
        ...socketOptions,
      });
      sockets.push(socket);
      setup?.(socket);
      await within(
        new Promise<void>((resolve, reject) => {
          socket.once('connect', () => resolve());
          socket.once('connect_error', (err) => reject(err));
        }),
        5_000,
        'device to connect',
      );
      return socket;
    },
    async close() {
      for (const s of sockets) s.disconnect();
      await Promise.allSettled(servers.map((s) => s.close()));
      await redis.quit();
    },
  };
}

/** Opens a device socket and resolves with the `connect_error` it gets (rejects if it connects). */
export async function connectError(
  url: string,
  auth: Record<string, unknown> | undefined,
): Promise<{ error: Error & { data?: { code?: string } }; socket: ClientSocket }> {
  const socket = io(url, { transports: ['websocket'], reconnection: false, ...(auth ? { auth } : {}) });
  try {
    const error = await within(
      new Promise<Error & { data?: { code?: string } }>((resolve, reject) => {
        socket.once('connect', () => reject(new Error('device was accepted')));
        socket.once('connect_error', (err) => resolve(err as Error & { data?: { code?: string } }));
      }),
      5_000,
      'connect_error',
    );
    return { error, socket };
  } catch (err) {
    socket.disconnect();
    throw err;
  }
}

/** Resolves with the first `event` the socket receives. */
export function nextEvent<T = unknown>(socket: ClientSocket, event: string, ms = 5_000): Promise<T> {
  return within(
    new Promise<T>((resolve) => socket.once(event, (arg: T) => resolve(arg))),
    ms,
    `event ${event}`,
  );
}

/** Resolves with the reason of the socket's disconnect. */
export function disconnected(socket: ClientSocket, ms = 5_000): Promise<string> {
  if (socket.disconnected) return Promise.resolve('already disconnected');
  return within(
    new Promise<string>((resolve) => socket.once('disconnect', (r) => resolve(r))),
    ms,
    'disconnect',
  );
}

/** Reads one counter/gauge value from a metrics registry. */
export async function metricValue(
  metrics: Registry,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const metric = metrics.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  let sum = 0;
  for (const v of data.values) {
    if (Object.entries(labels).every(([k, val]) => String(v.labels[k]) === val)) sum += v.value;
  }
  return sum;
}

/** A raw engine.io/socket.io client over a plain WebSocket, for frames socket.io-client never sends. */
export interface RawDevice {
  readonly ws: WebSocket;
  /** Text frames received so far (engine.io packets, e.g. `40{"sid":...}` or `430[...]`). */
  readonly frames: string[];
  /** Resolves with the first received frame (already received or not) that satisfies `match`. */
  frame(match: (frame: string) => boolean, ms?: number): Promise<string>;
  /** Resolves once the server closed the WebSocket. */
  closed(ms?: number): Promise<void>;
}

/**
 * Opens a WebSocket to the device port at the engine.io level and, when `token` is given, joins the
 * namespace with it (the socket.io CONNECT packet) and waits for the server to accept.
 */
export async function rawDevice(
  url: string,
  token?: string,
  options: { query?: string; localAddress?: string } = {},
): Promise<RawDevice> {
  const ws = new WebSocket(
    `${url.replace(/^http/, 'ws')}/socket.io/?${options.query ?? 'EIO=4&transport=websocket'}`,
    options.localAddress ? { localAddress: options.localAddress } : {},
  );
  const frames: string[] = [];
  const waiters = new Set<() => void>();
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    // Answer pings like a client would, so a slow test is not closed by the heartbeat.
    if (text === '2') ws.send('3');
    frames.push(text);
    for (const w of [...waiters]) w();
  });
  const closedPromise = new Promise<void>((resolve) => {
    ws.once('close', () => resolve());
    ws.once('error', () => resolve());
  });
  const device: RawDevice = {
    ws,
    frames,
    frame: (match, ms = 5_000) =>
      within(
        new Promise<string>((resolve) => {
          const check = () => {
            const found = frames.find(match);
            if (found === undefined) return;
            waiters.delete(check);
            resolve(found);
          };
          waiters.add(check);
          check();
        }),
        ms,
        'raw frame',
      ),
    closed: (ms = 5_000) => within(closedPromise, ms, 'server to close the raw WebSocket'),
  };
  await device.frame((f) => f.startsWith('0{'));
  if (token !== undefined) {
    ws.send(`40${JSON.stringify({ token })}`);
    await device.frame((f) => f.startsWith('40{'));
  }
  return device;
}
