import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureRedisServer, freePort, spawnGuarded, type GuardedProcess } from '@pushline/devstack';
import {
  connectionServerEnv,
  messageProcessorEnv,
  parseEnv,
  topicNames,
  type TopicNames,
} from '@pushline/config';
import { assembleConnectionServer, type ConnectionServer } from '@pushline/connection-server';
import { ensurePlatformTopics, type Consumer, type KafkaClient, type Producer } from '@pushline/kafka';
import { assembleMessageProcessor, type MessageProcessor } from '@pushline/message-processor';
import { DeliveryEvent, pushTargetKey, type DeviceMessage, type PushRequest } from '@pushline/protocol';
import { RedisDeviceRegistry, type RedisClient } from '@pushline/registry';
import { createLogger, silentLogger, type Logger, type Registry } from '@pushline/telemetry';
import {
  testInfra,
  testKafkaClient,
  testRedis,
  testSecret,
  uniquePrefix,
  waitUntil,
  within,
} from '@pushline/testkit';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

function testLogger(service: string): Logger {
  const level = process.env['PUSHLINE_TEST_LOG'];
  return level ? createLogger({ service, level }) : silentLogger();
}

/** A device: a real socket.io client that records every message and acks it. */
export interface Device {
  readonly deviceId: string;
  readonly socket: Socket;
  /** Message ids in the order they arrived. */
  readonly received: DeviceMessage[];
  ids(): string[];
  disconnect(): Promise<void>;
}

/** Every delivery event written to the test's delivery-events topic, read as they arrive. */
class EventLog {
  readonly events: DeliveryEvent[] = [];
  readonly #consumer: Consumer;

  constructor(kafka: KafkaClient, topic: string) {
    this.#consumer = kafka.consumer({
      groupId: `events-${uniquePrefix('log')}`,
      topics: [topic],
      fromBeginning: true,
      handleBatch: async (batch) => {
        for (const r of batch.records)
          this.events.push(DeliveryEvent.parse(JSON.parse(r.value?.toString() ?? '')));
      },
    });
  }

  start(): Promise<void> {
    return this.#consumer.start();
  }
  close(): Promise<void> {
    return this.#consumer.close();
  }

  of(requestId: string): DeliveryEvent[] {
    return this.events.filter((e) => e.requestId === requestId);
  }

  terminal(requestId: string): DeliveryEvent[] {
    return this.of(requestId).filter((e) => e.terminal);
  }

  async waitFor(
    check: (events: DeliveryEvent[]) => boolean,
    what: string,
    timeoutMs = 20_000,
  ): Promise<void> {
    await waitUntil(() => check(this.events), { timeoutMs, what });
  }
}

/** One test's isolated platform: topics, keys, secrets, and whatever it starts. */
export class World {
  readonly prefix = uniquePrefix('processor');
  readonly topicPrefix = `${this.prefix}.`;
  readonly keyPrefix = `${this.prefix}:`;
  readonly topics: TopicNames = topicNames(this.topicPrefix);
  readonly jwtSecret = testSecret();
  readonly internalToken = testSecret();
  /** The Redis every part of this world uses (default: the run's, a cluster when the run's is). */
  readonly redisUrl: string;
  /** PUSHLINE_REDIS_URL (and PUSHLINE_REDIS_CLUSTER_NODES) of that Redis. */
  readonly redisEnv: Readonly<Record<string, string>>;
  readonly redis: RedisClient;
  /** The Kafka every part of this world uses (default: the run's). */
  readonly kafkaBrokers: readonly string[];
  readonly kafka: KafkaClient;
  readonly registry: RedisDeviceRegistry;
  readonly groupId = `${this.prefix}-processors`;
  readonly events: EventLog;
  readonly #producer: Producer;
  readonly #closers: (() => Promise<unknown>)[] = [];

  constructor(options: { readonly redisUrl?: string; readonly kafkaBrokers?: readonly string[] } = {}) {
    this.kafkaBrokers = options.kafkaBrokers ?? testInfra().kafkaBrokers;
    this.kafka = testKafkaClient(`${this.prefix}-test`, this.kafkaBrokers);
    this.events = new EventLog(this.kafka, this.topics.deliveryEvents);
    this.#producer = this.kafka.producer();
    this.redisUrl = options.redisUrl ?? testInfra().redisUrl;
    const redisClusterNodes = options.redisUrl === undefined ? testInfra().redisClusterNodes : undefined;
    this.redisEnv =
      options.redisUrl === undefined ? testInfra().redisEnv : { PUSHLINE_REDIS_URL: this.redisUrl };
    // The test's own client keeps retrying while a test has Redis down.
    this.redis = testRedis({ maxRetriesPerRequest: null }, { redisUrl: this.redisUrl, redisClusterNodes });
    this.redis.on('error', () => {});
    this.registry = new RedisDeviceRegistry({ redis: this.redis, keyPrefix: this.keyPrefix });
  }

  async start(): Promise<void> {
    await ensurePlatformTopics(this.kafka, this.topics, 3);
    await this.#producer.start();
    await this.events.start();
  }

  processorEnv(overrides: Record<string, string> = {}): Record<string, string> {
    return {
      PUSHLINE_KAFKA_BROKERS: this.kafkaBrokers.join(','),
      ...this.redisEnv,
      PUSHLINE_TOPIC_PREFIX: this.topicPrefix,
      PUSHLINE_KEY_PREFIX: this.keyPrefix,
      PUSHLINE_KAFKA_PARTITIONS: '3',
      PUSHLINE_INTERNAL_TOKEN: this.internalToken,
      PUSHLINE_PROCESSOR_GROUP_ID: this.groupId,
      PUSHLINE_PROCESSOR_PORT: '0',
      PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: '6000',
      PUSHLINE_DELIVERY_TIMEOUT_MS: '2000',
      PUSHLINE_OFFLINE_SWEEP_MS: '100',
      PUSHLINE_OFFLINE_LEASE_MS: '5000',
      PUSHLINE_LOG_LEVEL: process.env['PUSHLINE_TEST_LOG'] ?? 'silent',
      ...overrides,
    };
  }

  /** A processor in this process, assembled as main.ts assembles it. */
  async startProcessor(
    overrides: Record<string, string> = {},
  ): Promise<{ processor: MessageProcessor; metrics: Registry }> {
    const assembled = assembleMessageProcessor(parseEnv(messageProcessorEnv, this.processorEnv(overrides)), {
      logger: testLogger('message-processor'),
      kafka: this.kafka,
    });
    this.#closers.push(() => assembled.close());
    await assembled.start();
    return { processor: assembled.processor, metrics: assembled.metrics };
  }

  /** A processor as its own OS process (`node src/main.ts`), for kill and signal tests. */
  spawnProcessor(overrides: Record<string, string> = {}): ChildProcess {
    const child = spawn(process.execPath, [MAIN], {
      env: { ...process.env, ...this.processorEnv(overrides) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    const keep = (chunk: Buffer) => {
      output = (output + chunk.toString()).slice(-20_000);
      if (process.env['PUSHLINE_TEST_LOG']) process.stderr.write(chunk);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    Object.defineProperty(child, 'output', { get: () => output });
    this.#closers.push(async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await once(child, 'exit');
      }
    });
    return child;
  }

  /** A connection server in this process, draining the offline store to devices on connect. */
  async startConnectionServer(id: string): Promise<ConnectionServer> {
    const config = parseEnv(connectionServerEnv, {
      PUSHLINE_KAFKA_BROKERS: this.kafkaBrokers.join(','),
      ...this.redisEnv,
      PUSHLINE_TOPIC_PREFIX: this.topicPrefix,
      PUSHLINE_KEY_PREFIX: this.keyPrefix,
      PUSHLINE_INTERNAL_TOKEN: this.internalToken,
      PUSHLINE_DEVICE_JWT_SECRET: this.jwtSecret,
      PUSHLINE_SERVER_ID: `${this.prefix}-${id}`,
      PUSHLINE_HOST: '127.0.0.1',
      PUSHLINE_PORT: '0',
      PUSHLINE_INTERNAL_PORT: '0',
      PUSHLINE_CLOSE_GRACE_MS: '100',
      PUSHLINE_DRAIN_WINDOW_MS: '100',
      PUSHLINE_DELIVERY_TIMEOUT_MS: '2000',
      PUSHLINE_LOAD_REPORT_MS: '500',
      PUSHLINE_LOG_LEVEL: 'silent',
    });
    const assembled = assembleConnectionServer(config, {
      logger: testLogger(`connection-server-${id}`),
      redis: this.redis,
      kafka: this.kafka,
    });
    this.#closers.push(() => assembled.close());
    await assembled.start();
    return assembled.server;
  }

  async token(deviceId: string, userId: string, topics?: string[]): Promise<string> {
    return new SignJWT({ uid: userId, ...(topics ? { topics } : {}) })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(deviceId)
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(this.jwtSecret));
  }

  /** Connects a device and resolves once it is in the registry (reachable for deliveries). */
  async connectDevice(
    server: ConnectionServer,
    deviceId: string,
    userId = 'user-1',
    topics?: string[],
    /**
     * `ack: false` keeps the device silent, like a connection that died without closing;
     * `onMessage` takes over acking (called instead of the automatic ack).
     */
    options: {
      readonly ack?: boolean;
      readonly onMessage?: (msg: DeviceMessage, ack: () => void) => void;
    } = {},
  ): Promise<Device> {
    const socket = io(server.deviceUrl, {
      transports: ['websocket'],
      reconnection: false,
      auth: { token: await this.token(deviceId, userId, topics) },
    });
    const received: DeviceMessage[] = [];
    socket.on('message', (msg: DeviceMessage, ack?: (a: { ok: true }) => void) => {
      received.push(msg);
      if (options.onMessage) options.onMessage(msg, () => ack?.({ ok: true }));
      else if (options.ack !== false) ack?.({ ok: true });
    });
    this.#closers.push(async () => {
      socket.disconnect();
    });
    await within(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', (err) => reject(err));
      }),
      5_000,
      `device ${deviceId} to connect`,
    );
    await waitUntil(async () => (await this.registry.lookup(deviceId))?.serverId === server.serverId, {
      what: `${deviceId} registered`,
    });
    return {
      deviceId,
      socket,
      received,
      ids: () => received.map((m) => m.id),
      disconnect: async () => {
        socket.disconnect();
        await waitUntil(async () => (await this.registry.lookup(deviceId)) === null, {
          what: `${deviceId} unregistered`,
        });
      },
    };
  }

  request(id: string, target: PushRequest['target'], extra: Partial<PushRequest> = {}): PushRequest {
    return { v: 1, id, target, payload: { id }, createdAt: Date.now(), ...extra };
  }

  /** Publishes requests to push-requests, keyed by target like the push-api does. */
  async publish(requests: readonly PushRequest[], headers?: Record<string, string>): Promise<void> {
    await this.#producer.send(
      this.topics.pushRequests,
      requests.map((r) => ({
        key: pushTargetKey(r.target),
        value: JSON.stringify(r),
        ...(headers ? { headers } : {}),
      })),
    );
  }

  async publishRaw(records: { key: string | null; value: string | Buffer | null }[]): Promise<void> {
    await this.#producer.send(this.topics.pushRequests, records);
  }

  async close(): Promise<void> {
    for (const close of this.#closers.reverse()) await close().catch(() => {});
    await this.events.close().catch(() => {});
    await this.#producer.close().catch(() => {});
    await within(this.redis.quit(), 2_000, 'redis quit').catch(() => this.redis.disconnect());
  }
}

/**
 * A redis-server of one test's own, with AOF written on every command (`appendfsync always`), that
 * the test can hang (SIGSTOP), kill -9 and restart on the same port and data directory.
 */
export class OwnRedis {
  readonly port: number;
  readonly dir: string;
  #proc: GuardedProcess;

  private constructor(port: number, dir: string, proc: GuardedProcess) {
    this.port = port;
    this.dir = dir;
    this.#proc = proc;
  }

  static async start(): Promise<OwnRedis> {
    const dir = await mkdtemp(path.join(tmpdir(), 'pushline-test-redis-'));
    const port = await freePort();
    const redis = new OwnRedis(port, dir, await OwnRedis.#spawn(port, dir));
    try {
      await redis.#waitForPong();
    } catch (err) {
      // Not the caller's yet, so nothing else would stop it.
      await redis.stop();
      throw err;
    }
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Redis stops answering without closing a socket, as a hung host does. */
  hang(): void {
    process.kill(this.#proc.pid, 'SIGSTOP');
  }

  resume(): void {
    process.kill(this.#proc.pid, 'SIGCONT');
  }

  /** kill -9: every connection drops; what the AOF holds survives. */
  async kill(): Promise<void> {
    process.kill(this.#proc.pid, 'SIGKILL');
    await this.#proc.exited;
  }

  /** Starts it again on the same port and data directory (the AOF is replayed). */
  async restart(): Promise<void> {
    this.#proc = await OwnRedis.#spawn(this.port, this.dir);
    await this.#waitForPong();
  }

  /** Brings it back however a test left it (hung or killed), so what uses it can close. */
  async revive(): Promise<void> {
    if (this.#proc.exitInfo() !== undefined) {
      await this.restart();
      return;
    }
    process.kill(this.#proc.pid, 'SIGCONT');
  }

  async stop(): Promise<void> {
    try {
      process.kill(this.#proc.pid, 'SIGCONT');
    } catch {
      // not running
    }
    await this.#proc.stop(2_000);
    await rm(this.dir, { recursive: true, force: true });
  }

  static async #spawn(port: number, dir: string): Promise<GuardedProcess> {
    return spawnGuarded({
      command: await ensureRedisServer(),
      args: [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'yes',
        '--appendfsync',
        'always',
        '--dir',
        dir,
        '--daemonize',
        'no',
      ],
      outFile: path.join(dir, 'redis.out'),
      orphanCleanupDir: dir,
      cwd: dir,
    });
  }

  async #waitForPong(): Promise<void> {
    const probe = new Redis(this.url, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => 50,
    });
    probe.on('error', () => {});
    try {
      await waitUntil(async () => (await probe.ping().catch(() => '')) === 'PONG', {
        what: `redis-server on port ${this.port}`,
      });
    } finally {
      probe.disconnect();
    }
  }
}

/** Output of a spawned processor (its JSON logs), for failure messages. */
export function outputOf(child: ChildProcess): string {
  return (child as ChildProcess & { output?: string }).output ?? '';
}
