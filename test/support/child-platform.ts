import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { topicNames, type TopicNames } from '@pushline/config';
import { freePort, spawnGuarded, type ExitInfo, type GuardedProcess } from '@pushline/devstack';
import { testInfra, testSecret, uniquePrefix, waitUntil } from '@pushline/testkit';

/**
 * The whole platform as child processes (each service's own main.ts, as in production) on the
 * run's Kafka and Redis, so a test can throw bad input at it from outside and then tell whether
 * any process died or restarted. Each child is guarded (spawnGuarded): it cannot outlive the test.
 */

const repoRoot = join(import.meta.dirname, '..', '..');

type ServiceKind = 'connection-server' | 'message-processor' | 'push-api';

interface ChildService {
  readonly name: string;
  readonly kind: ServiceKind;
  readonly pid: number;
  /**
   * URLs that answer 200 while the service is up and ready: /healthz and /readyz of a connection
   * server's internal port and of the processor's ops port; for the push-api its OpenAPI document,
   * served only once it listens with its producer connected (its ops endpoints may move off the
   * public port, issue 12 item 9).
   */
  readonly healthUrls: readonly string[];
  readonly logFile: string;
  exitInfo(): ExitInfo | undefined;
}

/** API keys with one scope each, besides the admin key. */
export interface ChildApiKeys {
  readonly admin: string;
  readonly push: string;
  readonly publish: string;
  readonly presence: string;
}

export interface ChildPlatform {
  readonly prefix: string;
  readonly topics: TopicNames;
  readonly apiUrl: string;
  /** One per connection server, in order. */
  readonly deviceUrls: readonly string[];
  readonly keys: ChildApiKeys;
  /** HS256 secret of device tokens. */
  readonly jwtSecret: string;
  readonly services: readonly ChildService[];
  readonly logDir: string;
  /** Services whose process exited, or whose pid no longer runs, since start. */
  lost(): { name: string; pid: number; exit: ExitInfo | undefined }[];
  /** Lines of a service's log that contain `needle` (for diagnosing a failure). */
  logLines(name: string, needle: string): string[];
  /** Stops every service (SIGTERM, SIGKILL after a bound); removes the logs unless `keepLogs`. */
  close(options?: { keepLogs?: boolean }): Promise<void>;
}

export interface ChildPlatformOptions {
  /** Connection servers. Default 1. */
  readonly connectionServers?: number;
  /** Added to every service's environment (after the defaults below). */
  readonly env?: Readonly<Record<string, string>>;
  /** Bound on each service becoming ready. Default 60 s. */
  readonly readyTimeoutMs?: number;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The parent's environment without any PUSHLINE_* variable, so only what is set here reaches a service. */
function baseEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PUSHLINE_')));
}

const opsHealth = (base: string) => [`${base}/healthz`, `${base}/readyz`];

export async function startChildPlatform(
  label: string,
  options: ChildPlatformOptions = {},
): Promise<ChildPlatform> {
  const infra = testInfra();
  const prefix = uniquePrefix(label);
  const topics = topicNames(`${prefix}.`);
  const logDir = mkdtempSync(join(tmpdir(), `pushline-${label}-`));
  const key = (scope: string) => `${scope}-${randomBytes(16).toString('hex')}`;
  const keys: ChildApiKeys = {
    admin: key('admin'),
    push: key('push'),
    publish: key('publish'),
    presence: key('presence'),
  };
  const jwtSecret = testSecret();
  const common: Record<string, string> = {
    PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
    PUSHLINE_REDIS_URL: infra.redisUrl,
    PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
    PUSHLINE_KEY_PREFIX: `${prefix}:`,
    PUSHLINE_KAFKA_PARTITIONS: '3',
    PUSHLINE_INTERNAL_TOKEN: testSecret(),
    PUSHLINE_LOG_LEVEL: 'warn',
  };
  const guarded: { service: ChildService; process: GuardedProcess }[] = [];
  const stopAll = () => Promise.allSettled(guarded.map((g) => g.process.stop(15_000)));

  const launch = async (
    kind: ServiceKind,
    name: string,
    env: Record<string, string>,
    healthUrls: readonly string[],
  ): Promise<ChildService> => {
    const logFile = join(logDir, `${name}.log`);
    const child = await spawnGuarded({
      command: process.execPath,
      // kafkajs 2.2.4 trips Node 24's TimeoutNegativeWarning (kafkajs#1751); createKafkaClient
      // removes the cause (decision 0026), so this only quiets raw kafkajs clients.
      args: ['--disable-warning=TimeoutNegativeWarning', join(repoRoot, 'services', kind, 'src', 'main.ts')],
      outFile: logFile,
      cwd: repoRoot,
      env: { ...baseEnv(), ...common, ...env, ...options.env },
    });
    const service: ChildService = {
      name,
      kind,
      pid: child.pid,
      healthUrls,
      logFile,
      exitInfo: () => child.exitInfo(),
    };
    guarded.push({ service, process: child });
    await waitUntil(
      async () => {
        const exit = child.exitInfo();
        if (exit) throw new Error(`${name} exited during start-up (${JSON.stringify(exit)}); see ${logFile}`);
        try {
          const answers = await Promise.all(
            healthUrls.map((url) => fetch(url, { signal: AbortSignal.timeout(1_000) })),
          );
          for (const answer of answers) await answer.body?.cancel();
          return answers.every((answer) => answer.ok);
        } catch {
          return false; // not listening yet
        }
      },
      {
        timeoutMs: options.readyTimeoutMs ?? 60_000,
        intervalMs: 100,
        what: `${name} ready (log ${logFile})`,
      },
    );
    return service;
  };

  try {
    const starting: Promise<ChildService>[] = [];
    const deviceUrls: string[] = [];
    for (let i = 0; i < (options.connectionServers ?? 1); i++) {
      const port = await freePort();
      const internalPort = await freePort();
      deviceUrls.push(`http://127.0.0.1:${port}`);
      starting.push(
        launch(
          'connection-server',
          `connection-server-${i + 1}`,
          {
            PUSHLINE_SERVER_ID: `${prefix}-cs-${i + 1}`,
            PUSHLINE_HOST: '127.0.0.1',
            PUSHLINE_PORT: String(port),
            PUSHLINE_INTERNAL_PORT: String(internalPort),
            PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
            PUSHLINE_CLOSE_GRACE_MS: '100',
            PUSHLINE_DRAIN_WINDOW_MS: '100',
          },
          opsHealth(`http://127.0.0.1:${internalPort}`),
        ),
      );
    }
    const processorPort = await freePort();
    starting.push(
      launch(
        'message-processor',
        'message-processor',
        {
          PUSHLINE_PROCESSOR_HOST: '127.0.0.1',
          PUSHLINE_PROCESSOR_PORT: String(processorPort),
          PUSHLINE_PROCESSOR_GROUP_ID: `${prefix}-processors`,
          PUSHLINE_PROCESSOR_INSTANCE_ID: `${prefix}-mp`,
          PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: '6000',
        },
        opsHealth(`http://127.0.0.1:${processorPort}`),
      ),
    );
    const apiPort = await freePort();
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    starting.push(
      launch(
        'push-api',
        'push-api',
        {
          PUSHLINE_API_HOST: '127.0.0.1',
          PUSHLINE_API_PORT: String(apiPort),
          // Not the default 8081: another platform on this machine may hold it.
          PUSHLINE_API_OPS_HOST: '127.0.0.1',
          PUSHLINE_API_OPS_PORT: String(await freePort()),
          PUSHLINE_API_KEYS: [
            `${keys.admin}:admin`,
            `${keys.push}:push`,
            `${keys.publish}:publish`,
            `${keys.presence}:presence`,
          ].join(','),
        },
        [`${apiUrl}/v1/openapi.json`],
      ),
    );
    const started = await Promise.allSettled(starting);
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const services = guarded.map((g) => g.service);

    return {
      prefix,
      topics,
      apiUrl,
      deviceUrls,
      keys,
      jwtSecret,
      services,
      logDir,
      lost: () =>
        services
          .filter((s) => s.exitInfo() !== undefined || !alive(s.pid))
          .map((s) => ({ name: s.name, pid: s.pid, exit: s.exitInfo() })),
      logLines: (name, needle) => {
        const service = services.find((s) => s.name === name);
        if (!service) return [];
        return readFileSync(service.logFile, 'utf8')
          .split('\n')
          .filter((line) => line.includes(needle));
      },
      close: async (closeOptions = {}) => {
        await stopAll();
        if (!closeOptions.keepLogs) rmSync(logDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
