import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { performance } from 'node:perf_hooks';
import { ensureDebianTool } from './apt.ts';
import { spawnGuarded, type GuardedProcess } from './guard.ts';
import { exchange, freePort } from './ports.ts';
import { BindConflict, waitForReady } from './readiness.ts';
import { noLog } from './util.ts';
import type { LogFn } from './util.ts';

export interface RedisInstance {
  /** redis://127.0.0.1:<port>; the same after a restart. */
  readonly url: string;
  readonly logFile: string;
  readonly workDir: string;
  /** pid of the redis-server process now (a restart starts a new one). */
  readonly pid: number;
  /** Wall time from the call to startRedis until PING was answered. */
  readonly startupMs: number;
  /** What a restart keeps: 'aof' replays the append-only file, 'none' comes back empty. */
  readonly persistence: RedisPersistence;
  /**
   * Stops redis-server (SIGTERM, or SIGKILL with `kill: true`) and starts it again on the same
   * port, dir and config; resolves when it answers PING again. The fault tests and benchmarks
   * inject: clients see their connections drop and reconnect to a Redis that kept only what its
   * persistence kept. `downForMs` keeps it stopped that long before it starts again: an outage
   * that outlives the TTLs of keys written just before it (with AOF they expire while it is down).
   */
  restart(options?: { kill?: boolean; downForMs?: number }): Promise<void>;
  /** Idempotent: every call returns the same promise. */
  stop(): Promise<void>;
}

/**
 * 'none': no RDB snapshots and no append-only file (fast; a restart loses every key).
 * 'aof': append-only file, fsynced every second (a restart keeps every write but the last second's).
 */
export type RedisPersistence = 'none' | 'aof';

/**
 * What Redis does at maxmemory. Pushline's registry entries and request ledger keys carry TTLs, so
 * any `volatile-*` policy may evict them, and `allkeys-*` may evict anything: only `noeviction`
 * (writes fail with OOM, visibly) guarantees none of them is dropped silently.
 */
export type RedisEvictionPolicy =
  | 'noeviction'
  | 'volatile-lru'
  | 'volatile-lfu'
  | 'volatile-ttl'
  | 'volatile-random'
  | 'allkeys-lru'
  | 'allkeys-lfu'
  | 'allkeys-random';

export interface StartRedisOptions {
  /** Default: a fresh temp dir, removed again by stop(). A given dir is kept. */
  workDir?: string;
  log?: LogFn;
  /** Default 15 s. */
  startTimeoutMs?: number;
  /** Grace after SIGTERM before SIGKILL. Default 10 s. */
  stopTimeoutMs?: number;
  /** Default 'none'. */
  persistence?: RedisPersistence;
  /** Memory limit, e.g. '256mb'. Default: none (Redis's 0, unbounded). */
  maxmemory?: string;
  /** Default 'noeviction', whatever Redis's own default: see RedisEvictionPolicy. */
  maxmemoryPolicy?: RedisEvictionPolicy;
  /** Default: a free port. */
  port?: number;
  /** Extra command-line config, e.g. ['--hz', '50']. */
  extraArgs?: readonly string[];
}

/** The redis-server arguments for the persistence and memory options (everything but port and paths). */
export function redisConfigArgs(
  opts: Pick<StartRedisOptions, 'persistence' | 'maxmemory' | 'maxmemoryPolicy'>,
): string[] {
  const args =
    (opts.persistence ?? 'none') === 'aof'
      ? ['--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec']
      : ['--save', '', '--appendonly', 'no'];
  if (opts.maxmemory !== undefined) args.push('--maxmemory', opts.maxmemory);
  args.push('--maxmemory-policy', opts.maxmemoryPolicy ?? 'noeviction');
  return args;
}

const HOST = '127.0.0.1';
const MAX_BIND_ATTEMPTS = 3;
const WELL_KNOWN = ['/usr/bin/redis-server', '/usr/local/bin/redis-server', '/opt/homebrew/bin/redis-server'];

/** Path of redis-server; as root on a Debian-like system installs it with apt-get when missing. */
export function ensureRedisServer(opts: { log?: LogFn } = {}): Promise<string> {
  return ensureDebianTool(
    {
      binary: 'redis-server',
      pkg: 'redis-server',
      wellKnown: WELL_KNOWN,
      advice:
        'Install it (Debian/Ubuntu: sudo apt-get install -y redis-server; macOS: brew install redis), ' +
        'or use an existing Redis with PUSHLINE_REDIS_URL=redis://host:port.',
    },
    opts.log ?? noLog,
  );
}

/** Sends a RESP PING and resolves with the first reply line (e.g. '+PONG'). */
async function ping(port: number, timeoutMs: number): Promise<string> {
  const reply = await exchange(HOST, port, Buffer.from('PING\r\n'), (buf) => buf.includes('\r\n'), timeoutMs);
  return reply.toString('utf8').split('\r\n')[0] ?? '';
}

export async function startRedis(opts: StartRedisOptions = {}): Promise<RedisInstance> {
  const log = opts.log ?? noLog;
  const startTimeoutMs = opts.startTimeoutMs ?? 15_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  const persistence = opts.persistence ?? 'none';
  const redisServer = await ensureRedisServer({ log });

  const started = performance.now();
  const ownsWorkDir = opts.workDir === undefined;
  const workDir =
    opts.workDir === undefined
      ? await mkdtemp(path.join(tmpdir(), 'pushline-redis-'))
      : path.resolve(opts.workDir);
  await mkdir(workDir, { recursive: true });
  const logFile = path.join(workDir, 'redis.log');
  const outFile = path.join(workDir, 'redis.out');
  const logs = [logFile, outFile];

  /** Spawns redis-server on `port` (a free one when undefined) and waits for PONG. */
  const launch = async (fixedPort: number | undefined): Promise<{ proc: GuardedProcess; port: number }> => {
    const deadline = Date.now() + startTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      await Promise.all(logs.map((p) => rm(p, { force: true })));
      const port = fixedPort ?? (await freePort(HOST));
      const proc = await spawnGuarded({
        command: redisServer,
        args: [
          '--port',
          String(port),
          '--bind',
          HOST,
          ...redisConfigArgs(opts),
          '--dir',
          workDir,
          '--logfile',
          logFile,
          '--daemonize',
          'no',
          ...(opts.extraArgs ?? []),
        ],
        outFile,
        orphanCleanupDir: ownsWorkDir ? workDir : undefined,
        cwd: workDir,
      });
      try {
        await waitForReady({
          proc,
          name: 'redis-server',
          deadline,
          startTimeoutMs,
          logs,
          intervalMs: 50,
          probe: async (remaining) => {
            const reply = await ping(port, Math.min(1_000, remaining));
            // Anything but PONG (e.g. -LOADING while a dataset loads) means: keep probing.
            return reply === '+PONG' ? true : `reply ${JSON.stringify(reply)}`;
          },
        });
      } catch (err) {
        await proc.stop(2_000);
        // A fixed port that is taken stays taken: only a port we picked is worth picking again.
        if (err instanceof BindConflict && fixedPort === undefined && attempt < MAX_BIND_ATTEMPTS) {
          log(`redis: port ${port} was taken meanwhile; retrying with a new port`);
          continue;
        }
        throw err;
      }
      return { proc, port };
    }
  };

  try {
    const first = await launch(opts.port);
    const port = first.port;
    let proc = first.proc;
    const startupMs = Math.round(performance.now() - started);
    const url = `redis://${HOST}:${port}`;
    log(
      `redis ready at ${url} in ${startupMs} ms (pid ${proc.pid}, persistence ${persistence}, log ${logFile})`,
    );
    let stopping: Promise<void> | undefined;
    let restarting: Promise<void> | undefined;
    return {
      url,
      logFile,
      workDir,
      get pid() {
        return proc.pid;
      },
      startupMs,
      persistence,
      restart(restartOpts = {}): Promise<void> {
        if (stopping) return Promise.reject(new Error('redis was stopped'));
        restarting ??= (async () => {
          const t = performance.now();
          if (restartOpts.kill) {
            process.kill(proc.pid, 'SIGKILL');
            await proc.exited;
          } else {
            await proc.stop(stopTimeoutMs);
          }
          if (restartOpts.downForMs !== undefined) await sleep(restartOpts.downForMs);
          proc = (await launch(port)).proc;
          log(
            `redis restarted in ${Math.round(performance.now() - t)} ms (pid ${proc.pid}, persistence ${persistence})`,
          );
        })().finally(() => (restarting = undefined));
        return restarting;
      },
      stop(): Promise<void> {
        stopping ??= (async () => {
          const t = performance.now();
          // A restart in progress ends first, so the process it starts is the one stopped.
          await restarting?.catch(() => undefined);
          const exit = await proc.stop(stopTimeoutMs);
          if (ownsWorkDir) await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
          log(
            `redis stopped in ${Math.round(performance.now() - t)} ms (exit code ${exit.code}, signal ${exit.signal})`,
          );
        })();
        return stopping;
      },
    };
  } catch (err) {
    if (ownsWorkDir) await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}
