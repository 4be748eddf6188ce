import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { ensureDebianTool } from './apt.ts';
import { spawnGuarded, type GuardedProcess } from './guard.ts';
import { exchange, freePorts } from './ports.ts';
import { BindConflict, waitForReady } from './readiness.ts';
import { ensureRedisServer, redisConfigArgs, type RedisEvictionPolicy } from './redis.ts';
import { delay, errorMessage, noLog } from './util.ts';
import type { LogFn } from './util.ts';

const execFileAsync = promisify(execFile);

/** One redis-server of a cluster, which a test can kill -9, pause and start again. */
export interface RedisClusterNode {
  /** host:port, as the cluster announces it. */
  readonly address: string;
  readonly port: number;
  /** pid of its redis-server now; undefined while it is down. */
  readonly pid: number | undefined;
  readonly logFile: string;
  /** kill -9; resolves once it exited. Its nodes.conf stays, so restart() rejoins the cluster. */
  kill(): Promise<void>;
  /** SIGSTOP: the process stops answering (and replicating) without closing a socket. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /**
   * Starts it again on its port, dir and nodes.conf; resolves once it answers PING. Without
   * persistence it comes back empty: a master whose slots were not failed over serves them
   * empty, one that was replaced rejoins as a replica of its successor.
   */
  restart(): Promise<void>;
  /** Sends one command and resolves with its reply (simple, error, integer or bulk) as text. */
  command(...args: string[]): Promise<string>;
}

/** A node as CLUSTER NODES describes it. */
export interface ClusterNodeInfo {
  readonly id: string;
  readonly address: string;
  readonly role: 'master' | 'replica';
  /** The master's id, for a replica. */
  readonly masterId: string | undefined;
  /** fail, pfail, handshake, noaddr: the node is not usable now. */
  readonly failing: boolean;
  /** Slot ranges it serves, inclusive. */
  readonly slots: readonly (readonly [number, number])[];
}

export interface RedisCluster {
  readonly nodes: readonly RedisClusterNode[];
  /** Every node's host:port, for a client's startup list (PUSHLINE_REDIS_CLUSTER_NODES). */
  readonly startupNodes: string[];
  readonly workDir: string;
  /** Wall time from the call until the cluster was healthy. */
  readonly startupMs: number;
  /** The topology as a live node sees it now. */
  topology(): Promise<ClusterNodeInfo[]>;
  /**
   * Resolves once every live node reports cluster_state:ok, every slot has a master that is not
   * failing, and each live replica's link to its master is up.
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Idempotent: every call returns the same promise. */
  stop(): Promise<void>;
}

export interface StartRedisClusterOptions {
  /** Masters, each owning an equal share of the slots. Default 3 (the least a cluster can fail over with). */
  readonly masters?: number;
  /** Replicas per master. Default 1. */
  readonly replicasPerMaster?: number;
  /** Default: a fresh temp dir, removed again by stop(). A given dir is kept. */
  readonly workDir?: string;
  readonly log?: LogFn;
  /** Bound on starting every node and forming the cluster. Default 60 s. */
  readonly startTimeoutMs?: number;
  /** Grace after SIGTERM before SIGKILL, per node. Default 10 s. */
  readonly stopTimeoutMs?: number;
  /**
   * cluster-node-timeout: how long a node may stop answering before it is flagged failing and
   * its replica may take over. Default 5 000 ms (Redis's own is 15 000).
   */
  readonly nodeTimeoutMs?: number;
  /** Memory limit per node, e.g. '256mb'. Default: none. */
  readonly maxmemory?: string;
  /** Default 'noeviction' (see RedisEvictionPolicy). */
  readonly maxmemoryPolicy?: RedisEvictionPolicy;
}

const HOST = '127.0.0.1';
const MAX_BIND_ATTEMPTS = 3;

/** Path of redis-cli (Debian's redis-tools, which redis-server depends on). */
export function ensureRedisCli(opts: { log?: LogFn } = {}): Promise<string> {
  return ensureDebianTool(
    {
      binary: 'redis-cli',
      pkg: 'redis-tools',
      wellKnown: ['/usr/bin/redis-cli', '/usr/local/bin/redis-cli', '/opt/homebrew/bin/redis-cli'],
      advice:
        'Install it (Debian/Ubuntu: sudo apt-get install -y redis-tools; macOS: brew install redis), ' +
        'or use an existing cluster with PUSHLINE_REDIS_CLUSTER_NODES=host:port,...',
    },
    opts.log ?? noLog,
  );
}

/**
 * A Redis Cluster of `masters` masters with `replicasPerMaster` replicas each, from
 * `redis-server --cluster-enabled yes` and `redis-cli --cluster create`, every node on free
 * loopback ports (its cluster bus port too) and guarded like the single Redis, so none outlives
 * us. No persistence; noeviction; cluster-require-full-coverage no, so the shards that are up
 * keep serving while one fails over.
 */
export async function startRedisCluster(opts: StartRedisClusterOptions = {}): Promise<RedisCluster> {
  const log = opts.log ?? noLog;
  const masters = opts.masters ?? 3;
  const replicas = opts.replicasPerMaster ?? 1;
  if (!Number.isInteger(masters) || masters < 3) throw new Error('a Redis Cluster needs at least 3 masters');
  if (!Number.isInteger(replicas) || replicas < 0) throw new Error('replicasPerMaster must be 0 or more');
  const count = masters * (1 + replicas);
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  const stopTimeoutMs = opts.stopTimeoutMs ?? 10_000;
  const nodeTimeoutMs = opts.nodeTimeoutMs ?? 5_000;
  const [redisServer, redisCli] = await Promise.all([ensureRedisServer({ log }), ensureRedisCli({ log })]);
  const started = performance.now();
  const deadline = Date.now() + startTimeoutMs;
  const ownsWorkDir = opts.workDir === undefined;
  const workDir =
    opts.workDir === undefined
      ? await mkdtemp(path.join(tmpdir(), 'pushline-redis-cluster-'))
      : path.resolve(opts.workDir);
  const orphanCleanupDir = ownsWorkDir ? workDir : undefined;

  try {
    for (let attempt = 1; ; attempt++) {
      await rm(workDir, { recursive: true, force: true });
      // A data port and a cluster bus port per node: the bus's default (port + 10000) may be taken
      // or past 65535 for a port from the ephemeral range.
      const ports = await freePorts(2 * count, HOST);
      const members = await Promise.all(
        Array.from({ length: count }, async (_, i) => {
          const port = ports[i] as number;
          const busPort = ports[count + i] as number;
          const dir = path.join(workDir, `node-${port}`);
          await mkdir(dir, { recursive: true });
          return clusterNode({
            redisServer,
            port,
            busPort,
            dir,
            nodeTimeoutMs,
            stopTimeoutMs,
            startTimeoutMs,
            orphanCleanupDir,
            memory: { maxmemory: opts.maxmemory, maxmemoryPolicy: opts.maxmemoryPolicy },
            log,
          });
        }),
      );
      try {
        await Promise.all(members.map((m) => m.start(deadline)));
        const create = await execFileAsync(
          redisCli,
          [
            '--cluster',
            'create',
            ...members.map((m) => m.address),
            '--cluster-replicas',
            String(replicas),
            '--cluster-yes',
          ],
          { timeout: Math.max(1_000, deadline - Date.now()), maxBuffer: 8 * 1024 * 1024 },
        ).catch((err: unknown) => {
          const out = err as { stdout?: string; stderr?: string };
          throw new Error(
            `redis-cli --cluster create failed: ${errorMessage(err)}\n${out.stdout ?? ''}${out.stderr ?? ''}`,
          );
        });
        if (!create.stdout.includes('All 16384 slots covered')) {
          throw new Error(`redis-cli --cluster create did not cover every slot:\n${create.stdout}`);
        }
      } catch (err) {
        await Promise.all(members.map((m) => m.stop()));
        if (err instanceof BindConflict && attempt < MAX_BIND_ATTEMPTS) {
          log('redis cluster: a port was taken meanwhile; retrying with new ports');
          continue;
        }
        throw err;
      }

      const topology = async (): Promise<ClusterNodeInfo[]> => {
        let last: unknown;
        for (const m of members) {
          if (m.pid === undefined) continue;
          try {
            return parseClusterNodes(await m.command('CLUSTER', 'NODES'));
          } catch (err) {
            last = err;
          }
        }
        throw new Error(`no node of the cluster answered CLUSTER NODES: ${errorMessage(last)}`);
      };
      const waitHealthy = async (timeoutMs = 30_000): Promise<void> => {
        const until = Date.now() + timeoutMs;
        let problem = 'not checked yet';
        while (Date.now() < until) {
          problem = (await healthProblem(members, masters).catch((err: unknown) => errorMessage(err))) ?? '';
          if (problem === '') return;
          // Re-check pace only: the loop ends when the cluster is healthy or at the deadline.
          await delay(100);
        }
        throw new Error(`the Redis Cluster did not become healthy in ${timeoutMs} ms: ${problem}`);
      };
      await waitHealthy(Math.max(1_000, deadline - Date.now())).catch(async (err: unknown) => {
        await Promise.all(members.map((m) => m.stop()));
        throw err;
      });

      const startupMs = Math.round(performance.now() - started);
      const startupNodes = members.map((m) => m.address);
      log(
        `redis cluster of ${masters} masters and ${masters * replicas} replicas ready at ${startupNodes.join(',')} in ${startupMs} ms`,
      );
      let stopping: Promise<void> | undefined;
      return {
        nodes: members,
        startupNodes,
        workDir,
        startupMs,
        topology,
        waitHealthy,
        stop() {
          stopping ??= (async () => {
            // A paused node would only answer SIGTERM after a SIGCONT.
            for (const m of members) m.resume();
            await Promise.all(members.map((m) => m.stop()));
            if (ownsWorkDir) await rm(workDir, { recursive: true, force: true, maxRetries: 3 });
            log('redis cluster stopped');
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

interface NodeSpec {
  readonly redisServer: string;
  readonly port: number;
  readonly busPort: number;
  readonly dir: string;
  readonly nodeTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly startTimeoutMs: number;
  readonly orphanCleanupDir: string | undefined;
  readonly memory: { maxmemory: string | undefined; maxmemoryPolicy: RedisEvictionPolicy | undefined };
  readonly log: LogFn;
}

type ManagedNode = RedisClusterNode & { start(until: number): Promise<void>; stop(): Promise<void> };

function clusterNode(spec: NodeSpec): ManagedNode {
  const logFile = path.join(spec.dir, 'redis.log');
  const outFile = path.join(spec.dir, 'redis.out');
  const address = `${HOST}:${spec.port}`;
  const memory = {
    ...(spec.memory.maxmemory === undefined ? {} : { maxmemory: spec.memory.maxmemory }),
    ...(spec.memory.maxmemoryPolicy === undefined ? {} : { maxmemoryPolicy: spec.memory.maxmemoryPolicy }),
  };
  let proc: GuardedProcess | undefined;
  const spawn = () =>
    spawnGuarded({
      command: spec.redisServer,
      args: [
        '--port',
        String(spec.port),
        '--bind',
        HOST,
        ...redisConfigArgs({ persistence: 'none', ...memory }),
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-port',
        String(spec.busPort),
        '--cluster-node-timeout',
        String(spec.nodeTimeoutMs),
        '--cluster-require-full-coverage',
        'no',
        // Replicas sync at once rather than after the default 5 s wait for more replicas to join.
        '--repl-diskless-sync-delay',
        '0',
        '--dir',
        spec.dir,
        '--logfile',
        logFile,
        '--daemonize',
        'no',
      ],
      outFile,
      orphanCleanupDir: spec.orphanCleanupDir,
      cwd: spec.dir,
    });
  const launch = async (until: number) => {
    const p = await spawn();
    proc = p;
    try {
      await waitForReady({
        proc: p,
        name: `redis-server ${address}`,
        deadline: until,
        startTimeoutMs: spec.startTimeoutMs,
        logs: [logFile, outFile],
        intervalMs: 50,
        probe: async (remaining) => {
          const reply = await respCommand(spec.port, ['PING'], Math.min(1_000, remaining));
          return reply === 'PONG' ? true : `reply ${JSON.stringify(reply)}`;
        },
      });
    } catch (err) {
      await p.stop(2_000);
      throw err;
    }
  };
  const alive = () => (proc && proc.exitInfo() === undefined ? proc : undefined);
  const signal = (name: NodeJS.Signals) => {
    const p = alive();
    if (!p) return;
    try {
      process.kill(p.pid, name);
    } catch {
      // it exited meanwhile
    }
  };
  return {
    address,
    port: spec.port,
    get pid() {
      return alive()?.pid;
    },
    logFile,
    start: launch,
    async kill() {
      const p = alive();
      if (!p) return;
      process.kill(p.pid, 'SIGKILL');
      await p.exited;
    },
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    async restart() {
      if (alive()) throw new Error(`redis-server ${address} is still running`);
      const t = performance.now();
      await launch(Date.now() + spec.startTimeoutMs);
      spec.log(`redis cluster node ${address} restarted in ${Math.round(performance.now() - t)} ms`);
    },
    command: (...args: string[]) => respCommand(spec.port, args, 5_000),
    async stop() {
      await proc?.stop(spec.stopTimeoutMs);
    },
  };
}

/** What keeps the cluster from being healthy, or undefined when it is. */
async function healthProblem(members: readonly ManagedNode[], masters: number): Promise<string | undefined> {
  const live = members.filter((m) => m.pid !== undefined);
  for (const m of live) {
    const info = await m.command('CLUSTER', 'INFO');
    if (!/^cluster_state:ok\r?$/m.test(info))
      return `${m.address} reports ${/cluster_state:\w+/.exec(info)?.[0]}`;
  }
  const first = live[0];
  if (!first) return 'no node is running';
  const nodes = parseClusterNodes(await first.command('CLUSTER', 'NODES'));
  const serving = nodes.filter((n) => n.role === 'master' && n.slots.length > 0);
  if (serving.length < masters) return `${serving.length} of ${masters} masters serve slots`;
  const failing = serving.find((n) => n.failing);
  if (failing) return `master ${failing.address} is failing`;
  const covered = serving.reduce((sum, n) => sum + n.slots.reduce((s, [a, b]) => s + b - a + 1, 0), 0);
  if (covered !== 16_384) return `${covered} of 16384 slots are served`;
  // Every live node is settled: a master with slots, or a replica linked to its master (a node
  // that just joined, or rejoined after its replica took over, is briefly an empty master).
  for (const m of live) {
    const node = nodes.find((n) => n.address === m.address);
    if (!node) return `${m.address} is not in the cluster yet`;
    if (node.role === 'master') {
      if (node.slots.length === 0) return `${m.address} is a master without slots (not settled)`;
      continue;
    }
    const info = await m.command('INFO', 'replication');
    if (!/^master_link_status:up\r?$/m.test(info)) return `replica ${m.address} is not linked to its master`;
  }
  return undefined;
}

/** Parses the text of CLUSTER NODES. */
export function parseClusterNodes(text: string): ClusterNodeInfo[] {
  const nodes: ClusterNodeInfo[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    if (fields.length < 8) continue;
    const [id = '', addr = '', flagText = '', master = '-'] = fields;
    const flags = flagText.split(',');
    const slots: [number, number][] = [];
    for (const part of fields.slice(8)) {
      if (part.startsWith('[')) continue; // a slot being migrated
      const [from, to] = part.split('-');
      slots.push([Number(from), Number(to ?? from)]);
    }
    nodes.push({
      id,
      address: addr.split('@')[0] ?? addr,
      role: flags.includes('master') ? 'master' : 'replica',
      masterId: master === '-' ? undefined : master,
      failing: flags.some((f) => ['fail', 'fail?', 'handshake', 'noaddr'].includes(f)),
      slots,
    });
  }
  return nodes;
}

/**
 * One RESP command on a fresh connection. The reply (simple string, error, integer or bulk
 * string; arrays are not needed here) comes back as text; an error reply as `ERR ...` text too,
 * prefixed with `-`.
 */
export async function respCommand(port: number, args: readonly string[], timeoutMs: number): Promise<string> {
  const request = Buffer.concat([
    Buffer.from(`*${args.length}\r\n`),
    ...args.map((a) => Buffer.from(`$${Buffer.byteLength(a)}\r\n${a}\r\n`)),
  ]);
  const reply = await exchange(HOST, port, request, (buf) => parseReply(buf) !== undefined, timeoutMs);
  return parseReply(reply) ?? '';
}

function parseReply(buf: Buffer): string | undefined {
  const eol = buf.indexOf('\r\n');
  if (eol < 0) return undefined;
  const head = buf.subarray(0, eol).toString('utf8');
  switch (head[0]) {
    case '+':
    case ':':
      return head.slice(1);
    case '-':
      return head;
    case '$': {
      const length = Number(head.slice(1));
      if (length < 0) return '';
      const end = eol + 2 + length;
      if (buf.length < end + 2) return undefined;
      return buf.subarray(eol + 2, end).toString('utf8');
    }
    default:
      throw new Error(`unexpected reply ${JSON.stringify(head)}`);
  }
}
