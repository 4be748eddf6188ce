import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { freePort } from '@pushline/devstack';
import { testSecret, uniquePrefix, waitUntil } from '@pushline/testkit';

/**
 * The three services as real child processes (`node services/<name>/src/main.ts`), the way a
 * deployment runs them, so tests can signal them and watch them exit.
 */

const ROOT = join(import.meta.dirname, '..', '..');

export type ServiceName = 'connection-server' | 'message-processor' | 'push-api';

export interface ServiceProcess {
  readonly name: ServiceName;
  readonly child: ChildProcess;
  /** Base URL of its ops port (/healthz, /readyz, /metrics). */
  readonly opsUrl: string;
  /** For the push-api: its public API (the ops port is a separate one, PUSHLINE_API_OPS_PORT). */
  readonly apiUrl?: string;
  /** For a connection server: where devices connect. */
  readonly deviceUrl?: string;
  /** Resolves with the exit code (null when a signal ended it) and signal. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything it wrote to stdout and stderr so far (JSON log lines). */
  output(): string;
}

export interface ServiceWorld {
  readonly prefix: string;
  readonly jwtSecret: string;
  readonly apiKey: string;
  /** Variables every service of the world gets. */
  readonly env: Record<string, string>;
}

/** Prefixes, secrets and infrastructure addresses shared by the services of one test. */
export function serviceWorld(
  label: string,
  infra: { redisUrl: string; kafkaBrokers: readonly string[] },
  extra: Record<string, string> = {},
): ServiceWorld {
  const prefix = uniquePrefix(label);
  const jwtSecret = testSecret();
  const apiKey = `k-${testSecret()}`;
  return {
    prefix,
    jwtSecret,
    apiKey,
    env: {
      PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: infra.redisUrl,
      PUSHLINE_TOPIC_PREFIX: `${prefix}.`,
      PUSHLINE_KEY_PREFIX: `${prefix}:`,
      PUSHLINE_KAFKA_PARTITIONS: '3',
      PUSHLINE_INTERNAL_TOKEN: testSecret(),
      PUSHLINE_LOG_LEVEL: 'info',
      ...extra,
    },
  };
}

/** Starts one service and resolves once its /readyz answers 200. */
export async function startServiceProcess(
  name: ServiceName,
  world: ServiceWorld,
  extra: Record<string, string> = {},
): Promise<ServiceProcess> {
  const env: Record<string, string> = { ...world.env, ...extra };
  let opsUrl: string;
  let deviceUrl: string | undefined;
  let apiUrl: string | undefined;
  if (name === 'connection-server') {
    const [port, internal] = [await freePort(), await freePort()];
    Object.assign(env, {
      PUSHLINE_SERVER_ID: env['PUSHLINE_SERVER_ID'] ?? `${world.prefix}-cs`,
      PUSHLINE_HOST: '127.0.0.1',
      PUSHLINE_PORT: String(port),
      PUSHLINE_INTERNAL_PORT: String(internal),
      PUSHLINE_DEVICE_JWT_SECRET: world.jwtSecret,
    });
    opsUrl = `http://127.0.0.1:${internal}`;
    deviceUrl = `http://127.0.0.1:${port}`;
  } else if (name === 'message-processor') {
    const port = await freePort();
    Object.assign(env, {
      PUSHLINE_PROCESSOR_HOST: '127.0.0.1',
      PUSHLINE_PROCESSOR_PORT: String(port),
      PUSHLINE_PROCESSOR_GROUP_ID: `${world.prefix}-processors`,
      PUSHLINE_PROCESSOR_SESSION_TIMEOUT_MS: '6000',
    });
    opsUrl = `http://127.0.0.1:${port}`;
  } else {
    const [port, opsPort] = [await freePort(), await freePort()];
    Object.assign(env, {
      PUSHLINE_API_HOST: '127.0.0.1',
      PUSHLINE_API_PORT: String(port),
      PUSHLINE_API_OPS_HOST: '127.0.0.1',
      PUSHLINE_API_OPS_PORT: String(opsPort),
      PUSHLINE_API_KEYS: `${world.apiKey}:admin`,
    });
    opsUrl = `http://127.0.0.1:${opsPort}`;
    apiUrl = `http://127.0.0.1:${port}`;
  }
  const child = spawn(
    process.execPath,
    ['--disable-warning=TimeoutNegativeWarning', join(ROOT, 'services', name, 'src', 'main.ts')],
    { cwd: ROOT, env: { PATH: process.env['PATH'] ?? '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = (once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>).then(
    ([code, signal]) => ({ code, signal }),
  );
  let gone = false;
  void exited.then(() => (gone = true));
  const service: ServiceProcess = {
    name,
    child,
    opsUrl,
    ...(deviceUrl ? { deviceUrl } : {}),
    ...(apiUrl ? { apiUrl } : {}),
    exited,
    output: () => output,
  };
  // Tracked from the spawn on, not from readiness: a start that fails beside others (Promise.all)
  // must not leave them running, or their pipes keep the test process, and `npm test`, alive.
  spawned.add(service);
  void exited.then(() => spawned.delete(service));
  try {
    await waitUntil(
      async () => {
        if (gone) throw new Error(`${name} exited during start-up:\n${output}`);
        try {
          return (await fetch(`${opsUrl}/readyz`, { signal: AbortSignal.timeout(1_000) })).ok;
        } catch {
          return false;
        }
      },
      { timeoutMs: 60_000, intervalMs: 100, what: `${name} ready` },
    );
  } catch (err) {
    killService(service);
    throw err;
  }
  return service;
}

/** Every service process spawned by this test file that has not exited yet. */
const spawned = new Set<ServiceProcess>();

/**
 * SIGKILLs every service this file started that still runs, and waits for their exits. For an
 * `after`/`afterEach` hook: it runs whether the test passed or failed, so nothing outlives the file.
 */
export async function killAllServices(): Promise<void> {
  const left = [...spawned];
  for (const service of left) killService(service);
  await Promise.all(left.map((service) => service.exited));
}

/** SIGKILL, for cleanup after a failed test; a no-op once the process is gone. */
function killService(service: ServiceProcess): void {
  const { child } = service;
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** The service's JSON log lines (other output skipped). */
export function logLines(service: ServiceProcess): Record<string, unknown>[] {
  return service
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
}
