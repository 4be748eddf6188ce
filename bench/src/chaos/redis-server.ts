import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { ensureRedisServer, freePort, spawnGuarded, type GuardedProcess } from '@pushline/devstack';

/**
 * The suite's own redis-server, which it can kill and start again on the same port and data dir,
 * with or without AOF. @pushline/devstack starts Redis without persistence and cannot restart it
 * yet; `launchRedisServer` is the one place to switch to devstack's option once it has one.
 */
export interface ChaosRedis {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  readonly pid: number;
  /** Whether the running server writes an append-only file. */
  readonly appendOnly: boolean;
  /** Turns AOF on in the running server (CONFIG SET) and waits until the file holds the whole dataset. */
  enableAppendOnly(): Promise<void>;
  /** kill -9: Redis vanishes mid-command, as in a crash. Resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts redis-server again on the same port and dir; with `appendOnly` it reloads its AOF. */
  start(appendOnly: boolean): Promise<void>;
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';

/** Starts redis-server on `port` with `dir` as its data dir and waits until it answers PING. */
async function launchRedisServer(o: {
  port: number;
  dir: string;
  appendOnly: boolean;
  timeoutMs: number;
}): Promise<GuardedProcess> {
  const bin = await ensureRedisServer();
  const proc = await spawnGuarded({
    command: bin,
    args: [
      '--port',
      String(o.port),
      '--bind',
      HOST,
      // No RDB snapshots: without AOF a restart starts empty, as devstack and compose run Redis.
      '--save',
      '',
      '--appendonly',
      o.appendOnly ? 'yes' : 'no',
      '--appendfsync',
      'everysec',
      '--dir',
      o.dir,
      '--logfile',
      join(o.dir, 'redis.log'),
      '--daemonize',
      'no',
    ],
    outFile: join(o.dir, 'redis.out'),
    cwd: o.dir,
  });
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const exit = proc.exitInfo();
    if (exit) throw new Error(`redis-server exited (code ${exit.code}) on port ${o.port}; see ${o.dir}`);
    // -LOADING while the AOF is read back: keep probing.
    if ((await ping(o.port).catch(() => '')) === '+PONG') return proc;
    if (Date.now() > deadline) {
      await proc.stop(1000);
      throw new Error(`redis-server on port ${o.port} did not answer PING within ${o.timeoutMs} ms`);
    }
    // Re-probe pace; the loop ends on PONG, exit or the deadline.
    await sleep(50);
  }
}

function ping(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: HOST, port });
    let text = '';
    socket.setTimeout(1000, () => socket.destroy(new Error('timeout')));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      if (text.includes('\r\n')) {
        socket.destroy();
        resolve(text.split('\r\n')[0] ?? '');
      }
    });
    socket.once('error', reject);
  });
}

export async function startChaosRedis(dir: string, log: (line: string) => void): Promise<ChaosRedis> {
  await mkdir(dir, { recursive: true });
  const port = await freePort(HOST);
  let appendOnly = false;
  let proc = await launchRedisServer({ port, dir, appendOnly, timeoutMs: 15_000 });
  const url = `redis://${HOST}:${port}`;
  log(`redis ready at ${url} (pid ${proc.pid}, dir ${dir})`);
  const withClient = async <T>(fn: (redis: Redis) => Promise<T>): Promise<T> => {
    const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      await redis.connect();
      return await fn(redis);
    } finally {
      redis.disconnect();
    }
  };
  return {
    url,
    port,
    dir,
    get pid() {
      return proc.pid;
    },
    get appendOnly() {
      return appendOnly;
    },
    async enableAppendOnly() {
      if (appendOnly) return;
      await withClient(async (redis) => {
        await redis.config('SET', 'appendonly', 'yes');
        // The rewrite that seeds the AOF runs in a fork; until it ends the file lacks the dataset.
        const deadline = Date.now() + 30_000;
        for (;;) {
          const info = await redis.info('persistence');
          const field = (name: string) => new RegExp(`^${name}:(\\d+)`, 'm').exec(info)?.[1];
          if (
            field('aof_enabled') === '1' &&
            field('aof_rewrite_in_progress') === '0' &&
            field('aof_rewrite_scheduled') === '0'
          )
            break;
          if (Date.now() > deadline) throw new Error('redis: AOF rewrite did not finish within 30 s');
          await sleep(50);
        }
      });
      appendOnly = true;
      log('redis: AOF enabled');
    },
    async kill() {
      if (proc.exitInfo() === undefined) {
        try {
          process.kill(proc.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await proc.exited;
      log(`redis: pid ${proc.pid} killed (SIGKILL)`);
    },
    async start(withAof: boolean) {
      if (proc.exitInfo() === undefined) throw new Error('redis: start() while it still runs');
      proc = await launchRedisServer({ port, dir, appendOnly: withAof, timeoutMs: 30_000 });
      appendOnly = withAof;
      const keys = await withClient((redis) => redis.dbsize());
      log(`redis: restarted on ${url} (pid ${proc.pid}, AOF ${withAof ? 'on' : 'off'}, ${keys} keys)`);
    },
    async stop() {
      await proc.stop(5_000);
    },
  };
}
