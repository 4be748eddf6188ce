import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { topicNames, type TopicNames } from '@pushline/config';
import { freePort, startKafka, type KafkaInstance } from '@pushline/devstack';
import { createKafkaClient, ensurePlatformTopics, type KafkaClient } from '@pushline/kafka';
import { RedisDeviceRegistry } from '@pushline/registry';
import { closeOnce, runCleanup, type CleanupStep } from '@pushline/runtime';
import { createWriteStream } from 'node:fs';
import { createLogger } from '@pushline/telemetry';
import { spawnService, waitReady, type ServiceProcess } from '../targets/child.ts';
import type { ProcessRef } from '../targets/memory.ts';
import { startChaosRedis, type ChaosRedis } from './redis-server.ts';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const serviceScript = (name: string) => join(REPO_ROOT, 'services', name, 'src', 'main.ts');

/**
 * One service the suite runs as a child process on fixed ports, so that it can be killed and
 * started again where its clients (devices, the registry, the other services) expect it.
 */
export class ChaosService {
  readonly name: string;
  /** Where /readyz, /healthz and /metrics answer. */
  readonly opsUrl: string;
  readonly #env: () => NodeJS.ProcessEnv;
  readonly #logFile: string;
  #proc: ServiceProcess | undefined;
  /** Set while the harness holds the service down on purpose (a fault), so probes skip it. */
  heldDown = false;

  constructor(name: string, opsUrl: string, logFile: string, env: () => NodeJS.ProcessEnv) {
    this.name = name;
    this.opsUrl = opsUrl;
    this.#env = env;
    this.#logFile = logFile;
  }

  get pid(): number | undefined {
    return this.#proc?.pid;
  }

  get logFile(): string {
    return this.#logFile;
  }

  isRunning(): boolean {
    return this.#proc?.isRunning() ?? false;
  }

  exitInfo(): { code: number | null; signal: NodeJS.Signals | null } | undefined {
    return this.#proc?.exitInfo();
  }

  /** Spawns the service and waits until its /readyz answers 200. */
  async start(timeoutMs = 90_000): Promise<void> {
    if (this.isRunning()) throw new Error(`${this.name} is already running`);
    const proc = spawnService(this.name, serviceScript(this.#script()), this.#env(), this.#logFile);
    this.#proc = proc;
    await waitReady(proc, this.opsUrl, timeoutMs);
    this.heldDown = false;
  }

  /** kill -9. */
  async kill(): Promise<void> {
    await this.#proc?.kill();
  }

  /** SIGTERM, then SIGKILL after `graceMs`; says whether it exited by itself, how fast and how. */
  async terminate(graceMs: number): Promise<{ exitedByItself: boolean; ms: number; code: number | null }> {
    const proc = this.#proc;
    if (!proc) return { exitedByItself: true, ms: 0, code: null };
    const { killed, ms } = await proc.stop(graceMs);
    return { exitedByItself: !killed, ms, code: proc.exitInfo()?.code ?? null };
  }

  #script(): string {
    if (this.name.startsWith('cs-')) return 'connection-server';
    return this.name;
  }
}

export interface ConnectionServerRef {
  readonly serverId: string;
  readonly deviceUrl: string;
  readonly service: ChaosService;
}

export interface ChaosPlatformOptions {
  readonly logDir: string;
  /** A broker to use instead of starting one; the suite can then not kill Kafka. */
  readonly externalKafka: readonly string[] | undefined;
  readonly partitions: number;
  readonly connectionServers: number;
  /** Drain window and close grace of the connection servers (the short run shrinks them). */
  readonly drainWindowMs: number;
  readonly closeGraceMs: number;
  readonly log: (line: string) => void;
}

/**
 * The whole platform as separate processes on free ports, started the way `npm start` runs it
 * (`node services/<name>/src/main.ts`): Kafka from @pushline/devstack (restartable), the suite's
 * own redis-server (restartable, with or without AOF), N connection servers, the message
 * processor and the push-api. Every setting the suite changes from the documented defaults is
 * here, with its reason.
 */
export class ChaosPlatform {
  readonly run = randomBytes(3).toString('hex');
  readonly keyPrefix = `chaos:${this.run}:`;
  readonly topicPrefix = `chaos-${this.run}.`;
  readonly topics: TopicNames = topicNames(this.topicPrefix);
  readonly groupId = `chaos-${this.run}-processors`;
  readonly apiKey = `chaos-${randomBytes(16).toString('hex')}`;
  readonly jwtSecret = randomBytes(32).toString('hex');
  readonly internalToken = randomBytes(24).toString('hex');
  readonly servers: ConnectionServerRef[] = [];
  readonly #opts: ChaosPlatformOptions;
  readonly #cleanup: CleanupStep[] = [];
  #kafka: KafkaInstance | undefined;
  #brokers: string[] = [];
  #redis: ChaosRedis | undefined;
  #processor: ChaosService | undefined;
  #api: ChaosService | undefined;
  #apiUrl = '';
  #kafkaClient: KafkaClient | undefined;
  #registry: RedisDeviceRegistry | undefined;
  readonly close = closeOnce(() => runCleanup([...this.#cleanup].reverse()));

  constructor(opts: ChaosPlatformOptions) {
    this.#opts = opts;
  }

  get drainWindowMs(): number {
    return this.#opts.drainWindowMs;
  }
  get closeGraceMs(): number {
    return this.#opts.closeGraceMs;
  }
  get brokers(): readonly string[] {
    return this.#brokers;
  }
  get ownsKafka(): boolean {
    return this.#kafka !== undefined;
  }
  get kafkaInstance(): KafkaInstance {
    if (!this.#kafka) throw new Error('Kafka is external: the suite cannot kill it');
    return this.#kafka;
  }
  get redis(): ChaosRedis {
    return required(this.#redis, 'redis');
  }
  get processor(): ChaosService {
    return required(this.#processor, 'processor');
  }
  get api(): ChaosService {
    return required(this.#api, 'push-api');
  }
  get apiUrl(): string {
    return this.#apiUrl;
  }
  get kafka(): KafkaClient {
    return required(this.#kafkaClient, 'kafka client');
  }
  get registry(): RedisDeviceRegistry {
    return required(this.#registry, 'registry');
  }
  /** Every service, connection servers first. */
  services(): ChaosService[] {
    return [...this.servers.map((s) => s.service), this.processor, this.api];
  }

  /** Every server-side process that runs now, for CPU accounting. */
  processes(): ProcessRef[] {
    const refs: ProcessRef[] = [];
    for (const s of this.services()) if (s.isRunning() && s.pid) refs.push({ name: s.name, pid: s.pid });
    if (this.#redis) refs.push({ name: 'redis', pid: this.#redis.pid });
    if (this.#kafka) refs.push({ name: 'kafka', pid: this.#kafka.pid });
    return refs;
  }

  async start(): Promise<void> {
    const { log, logDir } = this.#opts;
    try {
      if (this.#opts.externalKafka) {
        this.#brokers = [...this.#opts.externalKafka];
        log(`kafka: using ${this.#brokers.join(',')} (external: the kafka-restart scenario cannot run)`);
      } else {
        const kafka = await startKafka({ log: (l) => log(`devstack: ${l}`) });
        this.#kafka = kafka;
        this.#cleanup.push({ name: 'kafka', run: () => kafka.stop() });
        this.#brokers = [...kafka.brokers];
      }
      const redis = await startChaosRedis(join(logDir, 'redis'), log);
      this.#redis = redis;
      this.#cleanup.push({ name: 'redis', run: () => redis.stop() });

      // The suite's own producer and consumers log their Kafka warnings: a refused produce or a
      // consumer crash on the suite's side must be told apart from the platform's.
      const harnessLog = createWriteStream(join(logDir, 'harness-kafka.log'), { flags: 'a' });
      this.#cleanup.push({
        name: 'harness log',
        run: () => new Promise<void>((resolve) => harnessLog.end(() => resolve())),
      });
      const kafkaClient = createKafkaClient({
        brokers: this.#brokers,
        clientId: `chaos-${this.run}`,
        logger: createLogger({ service: 'chaos-harness', level: 'warn', destination: harnessLog }),
      });
      this.#kafkaClient = kafkaClient;
      // Created up front, so the services do not race each other for them.
      await ensurePlatformTopics(kafkaClient, this.topics, this.#opts.partitions);
      // No offline queue: a probe while Redis is down must fail at once, not wait for it.
      const redisClient = new Redis(redis.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false });
      redisClient.on('error', () => {});
      this.#cleanup.push({ name: 'redis client', run: () => void redisClient.disconnect() });
      this.#registry = new RedisDeviceRegistry({ redis: redisClient, keyPrefix: this.keyPrefix });

      const common = (): NodeJS.ProcessEnv => ({
        ...process.env,
        PUSHLINE_KAFKA_BROKERS: this.#brokers.join(','),
        PUSHLINE_REDIS_URL: redis.url,
        PUSHLINE_TOPIC_PREFIX: this.topicPrefix,
        PUSHLINE_KEY_PREFIX: this.keyPrefix,
        PUSHLINE_KAFKA_PARTITIONS: String(this.#opts.partitions),
        PUSHLINE_INTERNAL_TOKEN: this.internalToken,
        // The logs are the evidence when a reconciliation finds something.
        PUSHLINE_LOG_LEVEL: 'info',
      });

      for (let i = 0; i < this.#opts.connectionServers; i++) {
        const serverId = `cs-${String.fromCharCode(97 + i)}`;
        const [port, internalPort] = [await freePort(), await freePort()];
        const service = new ChaosService(
          serverId,
          `http://127.0.0.1:${internalPort}`,
          join(logDir, `${serverId}.log`),
          () => ({
            ...common(),
            // A restarted server keeps its id and ports, as a restarted pod behind the same address.
            PUSHLINE_SERVER_ID: serverId,
            PUSHLINE_HOST: '127.0.0.1',
            PUSHLINE_PORT: String(port),
            PUSHLINE_INTERNAL_PORT: String(internalPort),
            PUSHLINE_DEVICE_JWT_SECRET: this.jwtSecret,
            PUSHLINE_DRAIN_WINDOW_MS: String(this.#opts.drainWindowMs),
            PUSHLINE_CLOSE_GRACE_MS: String(this.#opts.closeGraceMs),
          }),
        );
        this.servers.push({ serverId, deviceUrl: `http://127.0.0.1:${port}`, service });
        this.#cleanup.push({ name: serverId, run: () => this.#stopLogged(service) });
      }
      const [apiPort, apiOpsPort] = [await freePort(), await freePort()];
      this.#apiUrl = `http://127.0.0.1:${apiPort}`;
      // /readyz, /healthz and /metrics answer on the ops port, kept off the public API.
      const apiOpsUrl = `http://127.0.0.1:${apiOpsPort}`;
      this.#api = new ChaosService('push-api', apiOpsUrl, join(logDir, 'push-api.log'), () => ({
        ...common(),
        PUSHLINE_API_HOST: '127.0.0.1',
        PUSHLINE_API_PORT: String(apiPort),
        PUSHLINE_API_OPS_HOST: '127.0.0.1',
        PUSHLINE_API_OPS_PORT: String(apiOpsPort),
        PUSHLINE_API_KEYS: `${this.apiKey}:admin`,
        // The per-key limiter protects a shared deployment; the suite is one client on purpose.
        PUSHLINE_API_RATE_PER_S: '1000000',
        PUSHLINE_API_BURST: '1000000',
      }));
      const api = this.#api;
      this.#cleanup.push({ name: 'push-api', run: () => this.#stopLogged(api) });
      const processorPort = await freePort();
      this.#processor = new ChaosService(
        'message-processor',
        `http://127.0.0.1:${processorPort}`,
        join(logDir, 'message-processor.log'),
        () => ({
          ...common(),
          PUSHLINE_PROCESSOR_HOST: '127.0.0.1',
          PUSHLINE_PROCESSOR_PORT: String(processorPort),
          PUSHLINE_PROCESSOR_GROUP_ID: this.groupId,
          // The broker's minimum: a killed processor's partitions move within seconds, not 30 s,
          // which keeps each scenario short. Claims keep their documented default.
          PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: '6000',
        }),
      );
      const processor = this.#processor;
      this.#cleanup.push({ name: 'message-processor', run: () => this.#stopLogged(processor) });
      await Promise.all(this.services().map((s) => s.start()));
      log(`platform ready: ${this.servers.map((s) => s.serverId).join(', ')}, message-processor, push-api`);
    } catch (err) {
      await this.close().catch(() => undefined);
      throw err;
    }
  }

  /** Starts every service that is not running and not held down; names the ones it restarted. */
  async ensureRunning(): Promise<string[]> {
    const restarted: string[] = [];
    for (const s of this.services()) {
      if (s.isRunning()) continue;
      const exit = s.exitInfo();
      restarted.push(`${s.name} (had exited: code ${exit?.code ?? '?'}, signal ${exit?.signal ?? '-'})`);
      await s.start();
    }
    return restarted;
  }

  async #stopLogged(service: ChaosService): Promise<void> {
    if (!service.isRunning()) return;
    const result = await service.terminate(20_000);
    if (!result.exitedByItself)
      this.#opts.log(`${service.name} did not exit within 20 s of SIGTERM and was killed`);
  }
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`chaos platform: ${what} is not started`);
  return value;
}

export async function makeLogDir(outDir: string, label: string): Promise<string> {
  const dir = join(outDir, 'tmp', `chaos-${new Date().toISOString().replace(/[:.]/g, '-')}-${label}`);
  await mkdir(dir, { recursive: true });
  return dir;
}
