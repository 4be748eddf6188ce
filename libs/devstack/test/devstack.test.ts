import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  KAFKA_VERSION,
  ensureKafkaJars,
  ensureRedisServer,
  freePort,
  startDevstack,
  startKafka,
  startRedis,
} from '../src/index.ts';

const INDEX_URL = new URL('../src/index.ts', import.meta.url).href;

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  await Promise.all(cleanups.splice(0).map((fn) => fn()));
});

/** A pid counts as alive unless it is gone or a zombie (an exited child nobody has reaped yet). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Live processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle) && isAlive(pid)) pids.push(pid);
    } catch {
      // exited while we looked
    }
  }
  return pids;
}

/** Polls `check` until it returns true or `timeoutMs` passes; returns the final result. */
async function eventually(check: () => boolean, timeoutMs: number, intervalMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (check()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

function connects(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(2_000, () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** One RESP command over a raw socket; resolves with the whole first reply. */
function redisCommand(url: string, ...args: string[]): Promise<string> {
  const { hostname, port } = new URL(url);
  const wire = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    let text = '';
    socket.setTimeout(2_000, () => socket.destroy(new Error('redis reply timeout')));
    socket.once('connect', () => socket.write(wire));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('utf8');
      // A bulk string is complete after its second line, a nil bulk ($-1) after its first, an
      // array of N bulk strings (CONFIG GET) after 1 + 2N lines.
      const lines = text.split('\r\n').length - 1;
      const complete = text.startsWith('*')
        ? lines >= 1 + 2 * Number(/^\*(\d+)/.exec(text)?.[1] ?? 0)
        : text.startsWith('$') && !text.startsWith('$-1')
          ? lines >= 2
          : lines >= 1;
      if (complete) {
        socket.destroy();
        resolve(text);
      }
    });
    socket.once('error', reject);
  });
}

function hostPort(broker: string): { host: string; port: number } {
  const [host, port] = broker.split(':');
  assert.ok(host !== undefined && port !== undefined, `bad broker address ${broker}`);
  return { host, port: Number(port) };
}

test('freePort returns a loopback port that can be bound', async () => {
  const port = await freePort();
  assert.ok(port > 0 && port < 65536);
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

test('ensureKafkaJars is idempotent and returns a complete libs dir', async () => {
  const first = await ensureKafkaJars();
  const started = Date.now();
  const second = await ensureKafkaJars();
  assert.equal(second, first);
  assert.ok(Date.now() - started < 1_000, 'a cached fetch must not run mvn again');
  assert.ok(existsSync(path.join(first, `kafka_2.13-${KAFKA_VERSION}.jar`)));
  const pom = await readFile(fileURLToPath(new URL('../kafka/pom.xml', import.meta.url)), 'utf8');
  assert.ok(
    pom.includes(`<kafka.version>${KAFKA_VERSION}</kafka.version>`),
    'pom.xml and KAFKA_VERSION must agree',
  );
});

test('kafka starts, serves on its port, and stop() leaves nothing behind', async () => {
  const lines: string[] = [];
  const kafka = await startKafka({ log: (l) => lines.push(l) });
  cleanups.push(() => kafka.stop());
  const { host, port } = hostPort(kafka.brokers[0] ?? '');
  assert.equal(kafka.brokers.length, 1);
  assert.equal(host, '127.0.0.1');
  assert.ok(isAlive(kafka.pid), 'java must run');
  assert.ok(await connects(host, port));
  assert.ok(kafka.startupMs > 0 && kafka.startupMs < 60_000);
  assert.ok(
    lines.some((l) => l.includes('ready')),
    'progress goes to the log callback',
  );
  assert.ok(existsSync(kafka.dataDir));
  assert.match(await readFile(kafka.logFile, 'utf8'), /Kafka Server started/);

  const stopping = kafka.stop();
  assert.equal(kafka.stop(), stopping, 'stop() is idempotent');
  await stopping;
  assert.equal(isAlive(kafka.pid), false, 'java must be gone once stop() resolves');
  assert.equal(await connects(host, port), false);
  assert.equal(existsSync(kafka.workDir), false, 'the temp work dir is removed');
});

test('kafka survives kill -9 and restart() on the same port and data dir, without a re-format', async () => {
  const kafka = await startKafka();
  cleanups.push(() => kafka.stop());
  const { host, port } = hostPort(kafka.brokers[0] ?? '');
  const clusterId = () =>
    /cluster\.id=(\S+)/.exec(readFileSync(path.join(kafka.dataDir, 'meta.properties'), 'utf8'))?.[1];
  const before = { pid: kafka.pid, clusterId: clusterId() };
  assert.ok(before.clusterId, 'the formatted data dir names its cluster');

  await kafka.kill();
  assert.equal(isAlive(before.pid), false, 'kill() resolves once java is gone');
  assert.equal(await connects(host, port), false);
  assert.ok(existsSync(kafka.dataDir), 'a crash keeps the data dir');

  await kafka.restart();
  assert.notEqual(kafka.pid, before.pid);
  assert.ok(isAlive(kafka.pid));
  assert.deepEqual(kafka.brokers, [`${host}:${port}`], 'same address');
  assert.ok(await connects(host, port));
  assert.equal(clusterId(), before.clusterId, 'the data dir was not formatted again');

  const pid = kafka.pid;
  await kafka.stop();
  assert.equal(isAlive(pid), false, 'stop() stops the restarted broker');
  await assert.rejects(kafka.restart(), /after stop/);
});

test('kafka start failure reports the log and cleans up', async () => {
  let message = '';
  await assert.rejects(
    startKafka({ brokerProperties: { 'num.partitions': 'not-a-number' } }),
    (err: unknown) => {
      message = err instanceof Error ? err.message : '';
      return true;
    },
  );
  assert.match(message, /Invalid value not-a-number for configuration num\.partitions/);
  const workDir = /last lines of (\S+)\/kafka[^/\s]*\s/.exec(message)?.[1];
  assert.ok(workDir !== undefined, `the error names the log it quotes:\n${message}`);
  assert.equal(existsSync(workDir), false, 'the temp work dir is removed after a failed start');
  assert.deepEqual(processesMentioning(workDir), []);
});

test('redis starts, answers PING, and stop() leaves nothing behind', async () => {
  const bin = await ensureRedisServer();
  assert.ok(bin.endsWith('redis-server'));
  const redis = await startRedis();
  cleanups.push(() => redis.stop());
  assert.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
  assert.ok(isAlive(redis.pid));
  assert.equal(await redisCommand(redis.url, 'PING'), '+PONG\r\n');
  assert.equal(await redisCommand(redis.url, 'SET', 'k', 'v'), '+OK\r\n');
  assert.equal(await redisCommand(redis.url, 'GET', 'k'), '$1\r\nv\r\n');

  const stopping = redis.stop();
  assert.equal(redis.stop(), stopping, 'stop() is idempotent');
  await stopping;
  assert.equal(isAlive(redis.pid), false);
  assert.equal(await connects('127.0.0.1', Number(new URL(redis.url).port)), false);
  assert.equal(existsSync(redis.workDir), false);
});

test('redis restarts on its port: without persistence it comes back empty, with AOF it keeps its keys', async () => {
  for (const persistence of ['none', 'aof'] as const) {
    const redis = await startRedis({ persistence });
    cleanups.push(() => redis.stop());
    assert.equal(redis.persistence, persistence);
    assert.equal(await redisCommand(redis.url, 'SET', 'kept', 'yes'), '+OK\r\n');
    const firstPid = redis.pid;
    for (const kill of [false, true]) {
      assert.equal(await redisCommand(redis.url, 'SET', 'kept', 'yes'), '+OK\r\n');
      // Redis write()s the AOF buffer before it answers, so even kill -9 finds the write in the file.
      await redis.restart({ kill });
      assert.notEqual(redis.pid, firstPid, 'a new process');
      assert.equal(await redisCommand(redis.url, 'PING'), '+PONG\r\n', 'same URL after the restart');
      assert.equal(
        await redisCommand(redis.url, 'GET', 'kept'),
        persistence === 'aof' ? '$3\r\nyes\r\n' : '$-1\r\n',
        `${persistence}, ${kill ? 'kill -9' : 'SIGTERM'}`,
      );
    }
    await redis.stop();
    assert.equal(isAlive(redis.pid), false);
    await assert.rejects(redis.restart(), /stopped/);
  }
});

test('redis runs with noeviction unless told otherwise, and with the given memory limit', async () => {
  const redis = await startRedis({ maxmemory: '64mb' });
  cleanups.push(() => redis.stop());
  assert.match(await redisCommand(redis.url, 'CONFIG', 'GET', 'maxmemory-policy'), /noeviction/);
  assert.match(await redisCommand(redis.url, 'CONFIG', 'GET', 'maxmemory'), /67108864/);
  assert.match(await redisCommand(redis.url, 'CONFIG', 'GET', 'appendonly'), /\bno\b/);
});

test('no orphans: SIGKILL of the parent takes java and redis-server down with it', async () => {
  const script = `
    const { startKafka, startRedis } = await import(${JSON.stringify(INDEX_URL)});
    const [kafka, redis] = await Promise.all([startKafka(), startRedis()]);
    process.stdout.write(JSON.stringify({
      kafkaPid: kafka.pid, redisPid: redis.pid, kafkaDir: kafka.workDir, redisDir: redis.workDir,
    }) + '\\n');
    setInterval(() => {}, 60_000);
  `;
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const parentExit = new Promise<void>((resolve) => parent.once('exit', () => resolve()));
  cleanups.push(async () => {
    parent.kill('SIGKILL');
    await parentExit;
  });
  let stderr = '';
  parent.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));

  const started = await new Promise<{
    kafkaPid: number;
    redisPid: number;
    kafkaDir: string;
    redisDir: string;
  }>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(
      () => reject(new Error(`parent did not start its stack in time\n${stderr}`)),
      90_000,
    );
    parent.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString('utf8');
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      resolve(
        JSON.parse(out.slice(0, nl)) as {
          kafkaPid: number;
          redisPid: number;
          kafkaDir: string;
          redisDir: string;
        },
      );
    });
    void parentExit.then(() => {
      clearTimeout(timer);
      reject(new Error(`parent exited before its stack was up\n${stderr}`));
    });
  });
  assert.ok(isAlive(started.kafkaPid) && isAlive(started.redisPid));
  assert.ok(processesMentioning(started.kafkaDir).length > 0, 'sanity: the probe sees the kafka processes');

  parent.kill('SIGKILL');
  await parentExit;

  // The guardian sends SIGTERM and escalates to SIGKILL after 10 s, so 30 s bounds even a hung JVM.
  assert.ok(
    await eventually(() => !isAlive(started.kafkaPid), 30_000),
    `java pid ${started.kafkaPid} outlived its parent`,
  );
  assert.ok(
    await eventually(() => !isAlive(started.redisPid), 30_000),
    `redis pid ${started.redisPid} outlived its parent`,
  );
  for (const dir of [started.kafkaDir, started.redisDir]) {
    assert.ok(
      await eventually(() => processesMentioning(dir).length === 0, 15_000),
      `processes still running for ${dir}: ${processesMentioning(dir).join(', ')}`,
    );
    assert.ok(await eventually(() => !existsSync(dir), 15_000), `${dir} was not removed`);
  }
});

test('startDevstack uses PUSHLINE_KAFKA_BROKERS and PUSHLINE_REDIS_URL instead of starting its own', async () => {
  const started = Date.now();
  const stack = await startDevstack({
    env: {
      PUSHLINE_KAFKA_BROKERS: ' 127.0.0.1:19092, 127.0.0.1:19093 ',
      PUSHLINE_REDIS_URL: 'redis://127.0.0.1:16379',
    },
  });
  cleanups.push(() => stack.stop());
  assert.ok(Date.now() - started < 1_000, 'nothing may be started');
  assert.deepEqual(stack.kafkaBrokers, ['127.0.0.1:19092', '127.0.0.1:19093']);
  assert.equal(stack.redisUrl, 'redis://127.0.0.1:16379');
  assert.deepEqual(stack.external, { kafka: true, redis: true });
  assert.equal(stack.kafka, undefined);
  assert.equal(stack.redis, undefined);
  assert.deepEqual(stack.env, {
    PUSHLINE_KAFKA_BROKERS: '127.0.0.1:19092,127.0.0.1:19093',
    PUSHLINE_REDIS_URL: 'redis://127.0.0.1:16379',
  });
  await stack.stop();
});

test('startDevstack starts what the env does not provide', async () => {
  const stack = await startDevstack({ env: { PUSHLINE_KAFKA_BROKERS: '127.0.0.1:19092' } });
  cleanups.push(() => stack.stop());
  assert.deepEqual(stack.external, { kafka: true, redis: false });
  assert.equal(stack.kafka, undefined);
  const redis = stack.redis;
  assert.ok(redis !== undefined);
  assert.equal(stack.redisUrl, redis.url);
  assert.equal(await redisCommand(stack.redisUrl, 'PING'), '+PONG\r\n');
  const stopping = stack.stop();
  assert.equal(stack.stop(), stopping);
  await stopping;
  assert.equal(isAlive(redis.pid), false);
});

test('PUSHLINE_DEV_KAFKA_NODES is checked before anything starts', async () => {
  for (const bad of ['three', '0', '1.5', '12']) {
    await assert.rejects(
      startDevstack({ env: { PUSHLINE_DEV_KAFKA_NODES: bad }, redis: false }),
      /PUSHLINE_DEV_KAFKA_NODES must be a whole number from 1 to 9/,
    );
  }
});

test('PUSHLINE_DEV_REDIS_CLUSTER=1 starts a Redis Cluster of 3 masters with a replica each, and stop() leaves nothing behind', async () => {
  const stack = await startDevstack({
    env: { PUSHLINE_KAFKA_BROKERS: '127.0.0.1:19092', PUSHLINE_DEV_REDIS_CLUSTER: '1' },
  });
  cleanups.push(() => stack.stop());
  const cluster = stack.redisCluster;
  assert.ok(cluster !== undefined);
  assert.equal(stack.redis, undefined);
  assert.equal(cluster.nodes.length, 6);
  assert.deepEqual(stack.redisClusterNodes, cluster.startupNodes);
  assert.equal(stack.env['PUSHLINE_REDIS_CLUSTER_NODES'], cluster.startupNodes.join(','));
  assert.equal(stack.redisUrl, `redis://${cluster.startupNodes[0]}`);
  const nodes = await cluster.topology();
  assert.equal(nodes.filter((n) => n.role === 'master' && n.slots.length > 0).length, 3);
  assert.equal(nodes.filter((n) => n.role === 'replica').length, 3);
  assert.match(await redisCommand(stack.redisUrl, 'CLUSTER', 'INFO'), /cluster_state:ok/);
  const pids = cluster.nodes.map((n) => n.pid);
  await stack.stop();
  assert.deepEqual(
    pids.filter((pid) => pid !== undefined && isAlive(pid)),
    [],
  );
  assert.equal(existsSync(cluster.workDir), false);
});

test('startDevstack uses PUSHLINE_REDIS_CLUSTER_NODES instead of starting a Redis', async () => {
  const stack = await startDevstack({
    env: {
      PUSHLINE_KAFKA_BROKERS: '127.0.0.1:19092',
      PUSHLINE_REDIS_CLUSTER_NODES: '127.0.0.1:17000, 127.0.0.1:17001',
      PUSHLINE_DEV_REDIS_CLUSTER: '1',
    },
  });
  cleanups.push(() => stack.stop());
  assert.deepEqual(stack.external, { kafka: true, redis: true });
  assert.equal(stack.redisCluster, undefined);
  assert.deepEqual(stack.env, {
    PUSHLINE_KAFKA_BROKERS: '127.0.0.1:19092',
    PUSHLINE_REDIS_URL: 'redis://127.0.0.1:17000',
    PUSHLINE_REDIS_CLUSTER_NODES: '127.0.0.1:17000,127.0.0.1:17001',
  });
});
