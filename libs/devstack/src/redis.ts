import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { spawnGuarded } from './guard.ts';
import { exchange, freePort } from './ports.ts';
import { BindConflict, waitForReady } from './readiness.ts';
import { ensureDebianTool } from './apt.ts';
import { noLog } from './util.ts';
import type { LogFn } from './util.ts';

export interface RedisInstance {
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  readonly logFile: string;
  readonly workDir: string;
  /** pid of the redis-server process. */
  readonly pid: number;
  /** Wall time from the call to startRedis until PING was answered. */
  readonly startupMs: number;
  /** Idempotent: every call returns the same promise. */
  stop(): Promise<void>;
}

export interface StartRedisOptions {
  /** Default: a fresh temp dir, removed again by stop(). A given dir is kept. */
  workDir?: string;
  log?: LogFn;
  /** Default 15 s. */
  startTimeoutMs?: number;
  /** Grace after SIGTERM before SIGKILL. Default 10 s. */
  stopTimeoutMs?: number;
  /** Extra command-line config, e.g. ['--maxmemory', '256mb']. */
  extraArgs?: readonly string[];
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
  const redisServer = await ensureRedisServer({ log });

  const started = performance.now();
  const deadline = Date.now() + startTimeoutMs;
  const ownsWorkDir = opts.workDir === undefined;
  const workDir =
    opts.workDir === undefined
      ? await mkdtemp(path.join(tmpdir(), 'pushline-redis-'))
      : path.resolve(opts.workDir);
  await mkdir(workDir, { recursive: true });
  const logFile = path.join(workDir, 'redis.log');
  const outFile = path.join(workDir, 'redis.out');
  const logs = [logFile, outFile];

  try {
    for (let attempt = 1; ; attempt++) {
      await Promise.all(logs.map((p) => rm(p, { force: true })));
      const port = await freePort(HOST);
      const proc = await spawnGuarded({
        command: redisServer,
        args: [
          '--port',
          String(port),
          '--bind',
          HOST,
          '--save',
          '',
          '--appendonly',
          'no',
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
        if (err instanceof BindConflict && attempt < MAX_BIND_ATTEMPTS) {
          log(`redis: port ${port} was taken meanwhile; retrying with a new port`);
          continue;
        }
        throw err;
      }
      const startupMs = Math.round(performance.now() - started);
      const url = `redis://${HOST}:${port}`;
      log(`redis ready at ${url} in ${startupMs} ms (pid ${proc.pid}, log ${logFile})`);
      let stopping: Promise<void> | undefined;
      return {
        url,
        logFile,
        workDir,
        pid: proc.pid,
        startupMs,
        stop(): Promise<void> {
          stopping ??= (async () => {
            const t = performance.now();
            const exit = await proc.stop(stopTimeoutMs);
            if (ownsWorkDir) await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
            log(
              `redis stopped in ${Math.round(performance.now() - t)} ms (exit code ${exit.code}, signal ${exit.signal})`,
            );
          })();
          return stopping;
        },
      };
    }
  } catch (err) {
    if (ownsWorkDir) await rm(workDir, { recursive: true, force: true });
    throw err;
  }
}
