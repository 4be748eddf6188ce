import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { z } from 'zod';
import { topicNames, type TopicNames } from '@pushline/config';
import { freePort, startDevstack, type Devstack } from '@pushline/devstack';
import { createKafkaClient, ensurePlatformTopics, type Producer } from '@pushline/kafka';
import { RedisDeviceRegistry } from '@pushline/registry';
import { runCleanup, closeOnce, type CleanupStep } from '@pushline/runtime';
import { silentLogger } from '@pushline/telemetry';
import { spawnService, waitReady, type ServiceProcess } from './child.ts';
import { heapSnapshotNodeOptions, nodeOptions, takeHeapSnapshot } from './heap-snapshot.ts';
import { promValue, readRssBytes } from './memory.ts';
import type { BroadcastAnswer, HttpPushSpec, MemorySample, Target } from './types.ts';

const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const serviceScript = (name: string) => join(REPO_ROOT, 'services', name, 'src', 'main.ts');

export type PushlineService = 'connection-server' | 'push-api' | 'message-processor';

/** Whether a service has a runnable entry yet (the services are built alongside the bench). */
export function serviceAvailable(name: PushlineService): boolean {
  return existsSync(serviceScript(name));
}

/** Stops a service and says so when it had to be killed: a service must exit by itself on SIGTERM. */
async function stopLogged(proc: ServiceProcess, log: (line: string) => void): Promise<void> {
  const { killed, ms } = await proc.stop();
  if (killed) log(`${proc.name} did not exit within ${Math.round(ms)} ms of SIGTERM and was killed`);
}

export interface ConnectionServerProcess {
  readonly serverId: string;
  readonly deviceUrl: string;
  readonly internalUrl: string;
  readonly process: ServiceProcess;
}

export interface IsolatedServers {
  readonly servers: readonly ConnectionServerProcess[];
  readonly registry: RedisDeviceRegistry;
  /** The client under `registry`, for cheap progress probes. */
  readonly redis: Redis;
  /** Prefix of the servers' keys on that Redis. */
  readonly keyPrefix: string;
  close(): Promise<void>;
}

const BroadcastResult = z.object({ delivered: z.number(), latencyMs: z.number() });

export interface PushlineTarget extends Target {
  readonly devstack: Devstack;
  readonly servers: readonly ConnectionServerProcess[];
  readonly apiUrl: string | undefined;
  readonly apiKey: string;
  readonly jwtSecret: string;
  readonly topics: TopicNames;
  /** Prefix of every Redis key the platform writes in this run. */
  readonly keyPrefix: string;
  readonly registry: RedisDeviceRegistry;
  /** The client under `registry`, for cheap progress probes. */
  readonly redis: Redis;
  readonly hasProcessor: boolean;
  /** Starts one more connection server like the others (the storm's extra survivors); stopped with the target. */
  addConnectionServer(): Promise<ConnectionServerProcess>;
  /**
   * Starts `count` connection servers like the others but on another Redis (one a scenario may
   * restart), with their own key prefix and a registry client there. close() stops them and the
   * client; the target also stops them when it closes.
   */
  connectionServersOn(redisUrl: string, count: number, label: string): Promise<IsolatedServers>;
  /** A started producer onto the platform's Kafka, for the async path. */
  producer(): Promise<Producer>;
}

export interface StartPushlineOptions {
  readonly logDir: string;
  /** Connection servers to run; the fan-out and storm scenarios need two. */
  readonly connectionServers: number;
  /** HS256 secret of device tokens (shared with the baseline, so one signer serves both). */
  readonly jwtSecret: string;
  /** When set, every service writes a V8 CPU profile `<name>.cpuprofile` here when it exits. */
  readonly profileDir?: string;
  /** When set, connection servers can write heap snapshots here (the target offers heapSnapshot()). */
  readonly heapSnapshotDir?: string;
  readonly log: (line: string) => void;
}

/**
 * The real platform as separate processes: Kafka and Redis from @pushline/devstack, then N
 * connection servers, push-api and the message processor via `node services/<name>/src/main.ts`.
 * Every value the bench changes from the documented defaults is here, with its reason.
 */
export async function startPushlineTarget(opts: StartPushlineOptions): Promise<PushlineTarget> {
  const cleanup: CleanupStep[] = [];
  const closeAll = closeOnce(() => runCleanup([...cleanup].reverse()));
  try {
    const devstack = await startDevstack({ log: (l) => opts.log(`devstack: ${l}`) });
    cleanup.push({ name: 'devstack', run: () => devstack.stop() });

    const run = randomBytes(3).toString('hex');
    const topicPrefix = `bench-${run}.`;
    const jwtSecret = opts.jwtSecret;
    const internalToken = randomBytes(24).toString('hex');
    const apiKey = `bench-${randomBytes(16).toString('hex')}`;
    const common: NodeJS.ProcessEnv = {
      ...process.env,
      ...devstack.env,
      PUSHLINE_TOPIC_PREFIX: topicPrefix,
      PUSHLINE_KEY_PREFIX: `bench:${run}:`,
      PUSHLINE_INTERNAL_TOKEN: internalToken,
      // info-level logs per connection would measure the logger, not the platform.
      PUSHLINE_LOG_LEVEL: 'warn',
    };
    const { profileDir, heapSnapshotDir } = opts;
    const withProfile = (name: string, env: NodeJS.ProcessEnv, heap = false): NodeJS.ProcessEnv => {
      const NODE_OPTIONS = nodeOptions(
        process.env['NODE_OPTIONS'],
        profileDir === undefined
          ? undefined
          : `--cpu-prof --cpu-prof-dir=${profileDir} --cpu-prof-name=${name}.cpuprofile`,
        heap && heapSnapshotDir !== undefined ? heapSnapshotNodeOptions(heapSnapshotDir) : undefined,
      );
      return NODE_OPTIONS === '' ? env : { ...env, NODE_OPTIONS };
    };
    const services: { name: string; pid: number }[] = [];
    const topics = topicNames(topicPrefix);
    const kafka = createKafkaClient({
      brokers: devstack.kafkaBrokers,
      clientId: 'pushline-bench',
      logger: silentLogger(),
    });
    // Created up front, so the first service to boot does not race the others for it.
    await ensurePlatformTopics(kafka, topics, 12);

    const servers: ConnectionServerProcess[] = [];
    const spawnConnectionServer = async (
      i: number,
      on: { redisUrl: string; keyPrefix: string; label: string } | undefined = undefined,
    ): Promise<ConnectionServerProcess> => {
      const serverId = `bench-${on ? on.label : 'cs'}-${String.fromCharCode(97 + i)}`;
      const [port, internalPort] = [await freePort(), await freePort()];
      const proc = spawnService(
        serverId,
        serviceScript('connection-server'),
        withProfile(
          serverId,
          {
            ...common,
            ...(on ? { PUSHLINE_REDIS_URL: on.redisUrl, PUSHLINE_KEY_PREFIX: on.keyPrefix } : {}),
            PUSHLINE_SERVER_ID: serverId,
            PUSHLINE_HOST: '127.0.0.1',
            PUSHLINE_PORT: String(port),
            PUSHLINE_INTERNAL_PORT: String(internalPort),
            PUSHLINE_DEVICE_JWT_SECRET: jwtSecret,
            // Every bench device connects from loopback: one address, thousands of handshakes.
            PUSHLINE_MAX_PENDING_PER_ADDRESS: '0',
          },
          true,
        ),
        join(opts.logDir, `${serverId}.log`),
      );
      cleanup.push({ name: serverId, run: () => stopLogged(proc, opts.log) });
      services.push({ name: serverId, pid: proc.pid });
      const server = {
        serverId,
        deviceUrl: `http://127.0.0.1:${port}`,
        internalUrl: `http://127.0.0.1:${internalPort}`,
        process: proc,
      };
      if (!on) servers.push(server);
      return server;
    };
    for (let i = 0; i < opts.connectionServers; i++) await spawnConnectionServer(i);

    let apiUrl: string | undefined;
    const starting: Promise<void>[] = servers.map((s) => waitReady(s.process, s.internalUrl, 60_000));
    if (serviceAvailable('push-api')) {
      const apiPort = await freePort();
      const apiOpsPort = await freePort();
      apiUrl = `http://127.0.0.1:${apiPort}`;
      const proc = spawnService(
        'push-api',
        serviceScript('push-api'),
        withProfile('push-api', {
          ...common,
          PUSHLINE_API_HOST: '127.0.0.1',
          PUSHLINE_API_PORT: String(apiPort),
          PUSHLINE_API_OPS_HOST: '127.0.0.1',
          PUSHLINE_API_OPS_PORT: String(apiOpsPort),
          PUSHLINE_API_KEYS: `${apiKey}:push+publish+presence+admin`,
          // The per-key limiter protects a shared deployment; the bench measures the delivery path.
          PUSHLINE_API_RATE_PER_S: '10000000',
          PUSHLINE_API_BURST: '10000000',
        }),
        join(opts.logDir, 'push-api.log'),
      );
      cleanup.push({ name: 'push-api', run: () => stopLogged(proc, opts.log) });
      services.push({ name: 'push-api', pid: proc.pid });
      starting.push(waitReady(proc, `http://127.0.0.1:${apiOpsPort}`, 60_000));
    }
    const hasProcessor = serviceAvailable('message-processor');
    if (hasProcessor) {
      const port = await freePort();
      const proc = spawnService(
        'message-processor',
        serviceScript('message-processor'),
        withProfile('message-processor', {
          ...common,
          PUSHLINE_PROCESSOR_HOST: '127.0.0.1',
          PUSHLINE_PROCESSOR_PORT: String(port),
        }),
        join(opts.logDir, 'message-processor.log'),
      );
      cleanup.push({ name: 'message-processor', run: () => stopLogged(proc, opts.log) });
      services.push({ name: 'message-processor', pid: proc.pid });
      starting.push(waitReady(proc, `http://127.0.0.1:${port}`, 90_000));
    }
    await Promise.all(starting);
    opts.log(
      `pushline: ${servers.length} connection server(s)${apiUrl ? ', push-api' : ''}${hasProcessor ? ', message-processor' : ''} ready`,
    );

    const redis = new Redis(devstack.redisUrl, { lazyConnect: false, maxRetriesPerRequest: 2 });
    cleanup.push({ name: 'redis', run: async () => void (await redis.quit()) });
    const registry = new RedisDeviceRegistry({ redis, keyPrefix: `bench:${run}:` });

    let producer: Promise<Producer> | undefined;
    const directPush: HttpPushSpec[] = [];
    if (apiUrl) {
      directPush.push({
        label: 'pushline push-api',
        baseUrl: apiUrl,
        pathTemplate: '/v1/devices/{device}/messages',
        headers: { authorization: `Bearer ${apiKey}` },
        bodyTemplate: '{"payload":{"t0":{t0}}}',
      });
    }

    return {
      name: 'pushline',
      devstack,
      servers,
      apiUrl,
      apiKey,
      jwtSecret,
      topics,
      keyPrefix: `bench:${run}:`,
      registry,
      redis,
      hasProcessor,
      deviceUrls: servers.map((s) => s.deviceUrl),
      async addConnectionServer(): Promise<ConnectionServerProcess> {
        const server = await spawnConnectionServer(servers.length);
        await waitReady(server.process, server.internalUrl, 60_000);
        return server;
      },
      async connectionServersOn(redisUrl, count, label): Promise<IsolatedServers> {
        const keyPrefix = `bench:${run}:${label}:`;
        const started: ConnectionServerProcess[] = [];
        const client = new Redis(redisUrl, { lazyConnect: false, maxRetriesPerRequest: 2 });
        const close = closeOnce(() =>
          runCleanup([
            ...started.map((s) => ({ name: s.serverId, run: () => stopLogged(s.process, opts.log) })),
            {
              name: `${label} redis`,
              run: async () => void (await client.quit().catch(() => client.disconnect())),
            },
          ]),
        );
        cleanup.push({ name: `${label} servers`, run: close });
        try {
          for (let i = 0; i < count; i++)
            started.push(await spawnConnectionServer(i, { redisUrl, keyPrefix, label }));
          await Promise.all(started.map((s) => waitReady(s.process, s.internalUrl, 60_000)));
        } catch (err) {
          await close();
          throw err;
        }
        return {
          servers: started,
          registry: new RedisDeviceRegistry({ redis: client, keyPrefix }),
          redis: client,
          keyPrefix,
          close,
        };
      },
      directPush,
      ...(heapSnapshotDir === undefined
        ? {}
        : {
            heapSnapshot(index: number, label: string): Promise<string> {
              const server = servers[index] as ConnectionServerProcess;
              return takeHeapSnapshot({
                pid: server.process.pid,
                dir: heapSnapshotDir,
                label,
                ping: async () => void (await (await fetch(`${server.internalUrl}/healthz`)).arrayBuffer()),
              });
            },
          }),
      processes: () => [
        ...services,
        ...(devstack.redis ? [{ name: 'redis', pid: devstack.redis.pid }] : []),
        ...(devstack.kafka ? [{ name: 'kafka', pid: devstack.kafka.pid }] : []),
      ],
      async eventLoopDelay() {
        const out: Record<string, { maxMs: number; p99Ms: number }> = {};
        for (const s of servers.filter((x) => x.process.isRunning())) {
          const text = await (await fetch(`${s.internalUrl}/metrics`)).text();
          const ms = (m: string) =>
            (promValue(text, `pushline_process_nodejs_eventloop_lag_${m}_seconds`) ?? 0) * 1000;
          out[s.serverId] = { maxMs: ms('max'), p99Ms: ms('p99') };
        }
        return out;
      },
      async memory(index: number): Promise<MemorySample> {
        const server = servers[index] as ConnectionServerProcess;
        const res = await fetch(`${server.internalUrl}/metrics`);
        const heap = promValue(await res.text(), 'pushline_process_nodejs_heap_size_used_bytes');
        return { rssBytes: await readRssBytes(server.process.pid), heapUsedBytes: heap };
      },
      async broadcast(topic: string, payload: unknown): Promise<BroadcastAnswer> {
        // Through push-api, which makes one broadcast call over the channel to one live server.
        if (!apiUrl) throw new Error('the fan-out needs push-api');
        const res = await fetch(`${apiUrl}/v1/topics/${encodeURIComponent(topic)}/messages`, {
          method: 'POST',
          headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ id: `bc-${randomBytes(6).toString('hex')}`, payload, timeoutMs: 10_000 }),
        });
        if (!res.ok) throw new Error(`broadcast answered ${res.status}: ${await res.text()}`);
        return BroadcastResult.parse(await res.json());
      },
      producer(): Promise<Producer> {
        producer ??= (async () => {
          const p = kafka.producer();
          await p.start();
          cleanup.push({ name: 'producer', run: () => p.close() });
          return p;
        })();
        return producer;
      },
      close: closeAll,
    };
  } catch (err) {
    await closeAll().catch(() => undefined);
    throw err;
  }
}
