import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { connectionServerEnv, parseEnv } from '@pushline/config';
import { haproxyConfig, type BalancedServer } from '@pushline/connection-server';
import {
  freePort,
  spawnGuarded,
  startDevstack,
  startHaproxy,
  type Devstack,
  type HaproxyInstance,
  type RedisPersistence,
} from '@pushline/devstack';
import { DEFAULT_SHUTDOWN_DEADLINE_MS } from '@pushline/runtime';
import type { DevCredentials } from './dev-credentials.ts';
import { repoRoot } from './dev-credentials.ts';

type ServiceName = 'connection-server' | 'message-processor' | 'push-api' | 'canary' | 'console';

export interface RunningService {
  readonly name: string;
  readonly pid: number;
  readonly opsUrl: string;
  readonly logFile: string;
  /** SIGTERM, then SIGKILL if it has not exited within its own shutdown deadline plus a margin. */
  stop(): Promise<void>;
  /** Another SIGTERM now: a service that is already stopping takes it as "exit at once". */
  terminate(): void;
}

export interface Platform {
  readonly devstack: Devstack;
  /** Where devices connect: HAProxy in front of the connection servers (a server's own URL without it). */
  readonly deviceUrl: string;
  /** Each connection server's own device URL, behind the balancer. */
  readonly deviceUrls: string[];
  /** HAProxy's stats page, when it runs. */
  readonly balancerStatsUrl: string | undefined;
  readonly apiUrl: string;
  /** The operator console's base URL (`/console`, `/demo`). */
  readonly consoleUrl: string;
  readonly services: RunningService[];
  readonly logDir: string;
  /** Graceful: services drain (devices get reconnect hints) and exit, then Kafka and Redis stop. */
  stop(): Promise<void>;
  /**
   * For an operator who does not want to wait (a second Ctrl-C): services are told to exit at
   * once and Kafka and Redis are killed; resolves when everything is gone.
   */
  forceStop(): Promise<void>;
}

export interface StartPlatformOptions {
  readonly credentials: DevCredentials;
  readonly logDir: string;
  /** Try the documented default ports first (npm start); tests pass false to always take free ports. */
  readonly preferDefaultPorts: boolean;
  readonly connectionServers?: number;
  readonly env?: NodeJS.ProcessEnv;
  readonly log?: (line: string) => void;
  /** Bound on each service answering /readyz. Default 60 s. */
  readonly readyTimeoutMs?: number;
  /** Persistence of a Redis started here. Default 'none'. */
  readonly redisPersistence?: RedisPersistence;
  /** Work dir of a Redis started here (kept across runs, so AOF data survives). Default: a temp dir. */
  readonly redisDir?: string;
  /**
   * HAProxy in front of the connection servers (default), or none: devices then pick a server's URL
   * themselves. Default from PUSHLINE_DEV_LOAD_BALANCER.
   */
  readonly loadBalancer?: 'haproxy' | 'none';
}

/**
 * The whole platform on one machine: real Kafka and Redis (or the ones PUSHLINE_KAFKA_BROKERS /
 * PUSHLINE_REDIS_URL point at), N connection servers, one message processor, one push-api and
 * the canary that probes them, each a guarded child process that cannot outlive us.
 */
export async function startPlatform(options: StartPlatformOptions): Promise<Platform> {
  const log = options.log ?? (() => {});
  const env = options.env ?? process.env;
  mkdirSync(options.logDir, { recursive: true });
  const loadBalancer = options.loadBalancer ?? loadBalancerFromEnv(env);
  const devstack = await startDevstack({
    env,
    log,
    // Whatever Redis's own default: registry and ledger keys have TTLs, and only noeviction
    // never drops one (docs/delivery-guarantees.md).
    redisOptions: {
      persistence: options.redisPersistence ?? 'none',
      maxmemoryPolicy: 'noeviction',
      ...(options.redisDir === undefined ? {} : { workDir: options.redisDir }),
    },
  });
  const services: RunningService[] = [];
  let haproxy: HaproxyInstance | undefined;
  const stop = async () => {
    // Services first (they flush to Kafka and deregister in Redis), then the infrastructure.
    await Promise.allSettled(services.map((s) => s.stop()));
    await haproxy?.stop();
    await devstack.stop();
  };
  const forceStop = async () => {
    for (const s of services) s.terminate();
    for (const pid of [
      devstack.kafka?.pid,
      devstack.redis?.pid,
      ...(devstack.redisCluster?.nodes.map((n) => n.pid) ?? []),
    ]) {
      if (pid === undefined) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await stop();
  };
  try {
    const common: NodeJS.ProcessEnv = {
      ...env,
      PUSHLINE_KAFKA_BROKERS: devstack.kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: devstack.redisUrl,
      // The cluster's nodes when PUSHLINE_DEV_REDIS_CLUSTER=1 started one (or it was given).
      ...(devstack.redisClusterNodes
        ? { PUSHLINE_REDIS_CLUSTER_NODES: devstack.redisClusterNodes.join(',') }
        : {}),
      PUSHLINE_INTERNAL_TOKEN: options.credentials.internalToken,
    };
    const port = (preferred: number) => (options.preferDefaultPorts ? pickPort(preferred) : freePort());

    const deviceUrls: string[] = [];
    const count = options.connectionServers ?? 2;
    const starting: Promise<RunningService>[] = [];
    const servers: { env: NodeJS.ProcessEnv & { PUSHLINE_SERVER_ID: string }; opsUrl: string }[] = [];
    for (let i = 0; i < count; i++) {
      const devicePort = await port(7072 + 2 * i);
      const internalPort = await port(7073 + 2 * i);
      deviceUrls.push(`http://127.0.0.1:${devicePort}`);
      servers.push({
        env: {
          ...common,
          PUSHLINE_SERVER_ID: `dev-cs-${i + 1}`,
          PUSHLINE_PORT: String(devicePort),
          PUSHLINE_INTERNAL_PORT: String(internalPort),
          PUSHLINE_AGENT_PORT: String(await port(7170 + i)),
          PUSHLINE_DEVICE_JWT_SECRET: options.credentials.deviceJwtSecret,
        },
        opsUrl: `http://127.0.0.1:${internalPort}`,
      });
    }
    let deviceUrl = deviceUrls[0] ?? '';
    let balancerStatsUrl: string | undefined;
    if (loadBalancer === 'haproxy') {
      // The balancer takes the documented device port and starts first: each server's agent
      // answers `down #starting` until the server is ready.
      const balanced: BalancedServer[] = servers.map((s) => ({
        name: s.env.PUSHLINE_SERVER_ID,
        host: '127.0.0.1',
        config: parseEnv(connectionServerEnv, s.env),
      }));
      let balancerPort = await port(7070);
      const statsPort = await port(7069);
      let attempts = 0;
      haproxy = await startHaproxy({
        log,
        render: async () => {
          // A retry (a port was taken between choosing and binding) gets a free one.
          if (attempts++ > 0) balancerPort = await freePort();
          const config = haproxyConfig(balanced, {
            bind: { host: '127.0.0.1', port: balancerPort },
            stats: { host: '127.0.0.1', port: statsPort },
            generatedBy: 'npm start (scripts/lib/platform.ts)',
          });
          return { config, readyPort: balancerPort };
        },
      });
      deviceUrl = `http://127.0.0.1:${balancerPort}`;
      balancerStatsUrl = `http://127.0.0.1:${statsPort}/stats`;
      log(`haproxy in front of the connection servers at ${deviceUrl} (stats ${balancerStatsUrl})`);
      // The URL the servers advertise (the console's demo device connects to it).
      for (const s of servers) s.env['PUSHLINE_PUBLIC_URL'] = deviceUrl;
    }
    servers.forEach((s, i) =>
      starting.push(
        startService('connection-server', `connection-server-${i + 1}`, options, log, s.env, s.opsUrl),
      ),
    );
    const processorPort = await port(7080);
    starting.push(
      startService(
        'message-processor',
        'message-processor',
        options,
        log,
        {
          ...common,
          PUSHLINE_PROCESSOR_PORT: String(processorPort),
        },
        `http://127.0.0.1:${processorPort}`,
      ),
    );
    // Keys given in the environment stay; the dev admin key is added to them.
    const apiKeys = [env['PUSHLINE_API_KEYS'], `${options.credentials.apiKey}:admin`]
      .filter((k): k is string => Boolean(k?.trim()))
      .join(',');
    const apiPort = await port(8080);
    const apiOpsPort = await port(8081);
    starting.push(
      startService(
        'push-api',
        'push-api',
        options,
        log,
        {
          ...common,
          PUSHLINE_API_PORT: String(apiPort),
          PUSHLINE_API_OPS_PORT: String(apiOpsPort),
          PUSHLINE_API_KEYS: apiKeys,
        },
        `http://127.0.0.1:${apiOpsPort}`,
      ),
    );
    const results = await Promise.allSettled(starting);
    for (const r of results) if (r.status === 'fulfilled') services.push(r.value);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    // The canary probes through the API and the connection servers, so it starts once they are up.
    const canaryPort = await port(7090);
    services.push(
      await startService(
        'canary',
        'canary',
        options,
        log,
        {
          ...common,
          PUSHLINE_CANARY_PORT: String(canaryPort),
          PUSHLINE_CANARY_API_URL: `http://127.0.0.1:${apiPort}`,
          PUSHLINE_CANARY_API_KEY: options.credentials.apiKey,
          PUSHLINE_DEVICE_JWT_SECRET: options.credentials.deviceJwtSecret,
        },
        `http://127.0.0.1:${canaryPort}`,
      ),
    );
    // The console scrapes every service's metrics and calls the API, so it starts last.
    const consolePort = await port(8090);
    const scrapeUrls = services
      .filter((s) => s.name === 'push-api' || s.name === 'message-processor' || s.name === 'canary')
      .map((s) => `${s.name}=${s.opsUrl}`)
      .join(',');
    services.push(
      await startService(
        'console',
        'console',
        options,
        log,
        {
          ...common,
          PUSHLINE_CONSOLE_PORT: String(consolePort),
          PUSHLINE_CONSOLE_API_URL: `http://127.0.0.1:${apiPort}`,
          PUSHLINE_CONSOLE_SCRAPE_URLS: scrapeUrls,
          PUSHLINE_API_KEYS: apiKeys,
        },
        `http://127.0.0.1:${consolePort}`,
      ),
    );
    return {
      devstack,
      deviceUrl,
      deviceUrls,
      balancerStatsUrl,
      apiUrl: `http://127.0.0.1:${apiPort}`,
      consoleUrl: `http://127.0.0.1:${consolePort}`,
      services,
      logDir: options.logDir,
      stop,
      forceStop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function startService(
  service: ServiceName,
  name: string,
  options: StartPlatformOptions,
  log: (line: string) => void,
  env: NodeJS.ProcessEnv,
  opsUrl: string,
): Promise<RunningService> {
  const logFile = join(options.logDir, `${name}.log`);
  const child = await spawnGuarded({
    command: process.execPath,
    // kafkajs 2.2.4 trips Node 24's TimeoutNegativeWarning (kafkajs#1751); harmless, and noisy.
    args: ['--disable-warning=TimeoutNegativeWarning', join(repoRoot, 'services', service, 'src', 'main.ts')],
    outFile: logFile,
    cwd: repoRoot,
    env,
  });
  // The service bounds its own shutdown (PUSHLINE_SHUTDOWN_DEADLINE_MS); the kill is for a wedged one.
  const deadlineMs = Number(env['PUSHLINE_SHUTDOWN_DEADLINE_MS'] ?? '') || DEFAULT_SHUTDOWN_DEADLINE_MS;
  const running: RunningService = {
    name,
    pid: child.pid,
    opsUrl,
    logFile,
    stop: async () => {
      await child.stop(deadlineMs + 5_000);
    },
    terminate: () => child.terminate(),
  };
  try {
    await waitReady(opsUrl, child.exited, options.readyTimeoutMs ?? 60_000, name, logFile);
  } catch (err) {
    await running.stop();
    throw err;
  }
  log(`${name} ready (pid ${child.pid}, log ${logFile})`);
  return running;
}

async function waitReady(
  opsUrl: string,
  exited: Promise<unknown>,
  timeoutMs: number,
  name: string,
  logFile: string,
): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (gone) throw new Error(`${name} exited during start-up; see ${logFile}${await logTail(logFile)}`);
    try {
      const res = await fetch(`${opsUrl}/readyz`, { signal: AbortSignal.timeout(1_000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    // Re-check pace only: the loop ends on readiness, exit, or the deadline.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${name} was not ready within ${timeoutMs} ms; see ${logFile}`);
}

/** The last lines of a service's log, for an error that outlives the log (a test's temp dir). */
async function logTail(logFile: string, lines = 15): Promise<string> {
  try {
    const text = await readFile(logFile, 'utf8');
    return `\n--- last lines of ${logFile} ---\n${text.trimEnd().split('\n').slice(-lines).join('\n')}`;
  } catch {
    return '';
  }
}

/** The preferred port if it is free on loopback, else any free port. */
async function pickPort(preferred: number): Promise<number> {
  const free = await new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(preferred, '0.0.0.0', () => server.close(() => resolve(true)));
  });
  return free ? preferred : freePort();
}

function loadBalancerFromEnv(env: NodeJS.ProcessEnv): 'haproxy' | 'none' {
  const value = env['PUSHLINE_DEV_LOAD_BALANCER'] ?? 'haproxy';
  if (value !== 'haproxy' && value !== 'none') {
    throw new Error(`PUSHLINE_DEV_LOAD_BALANCER must be haproxy or none, not ${JSON.stringify(value)}`);
  }
  return value;
}
