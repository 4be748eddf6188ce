import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, test } from 'node:test';
import { Redis } from 'ioredis';
import { SignJWT } from 'jose';
import { io, type Socket } from 'socket.io-client';
import { DeviceEvents } from '@pushline/protocol';
import { topicNames } from '@pushline/config';
import { testInfra, testKafkaClient, uniquePrefix, waitUntil, within } from '@pushline/testkit';
import { mintDevToken } from '../scripts/lib/dev-token.ts';

const root = join(import.meta.dirname, '..');
const stateDir = mkdtempSync(join(tmpdir(), 'pushline-start-'));
let child: ChildProcess | undefined;
/** Every launcher any test started: one that failed half-way must not outlive the file. */
const launched: ChildProcess[] = [];
const devices: Socket[] = [];

afterEach(() => {
  for (const d of devices.splice(0)) d.disconnect();
  // SIGKILL of a launcher closes its guardians' stdin, which stops its services.
  for (const c of launched.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

after(() => {
  rmSync(stateDir, { recursive: true, force: true });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('npm start brings every service up, creates the topics, and SIGTERM stops everything', async () => {
  const infra = testInfra();
  const prefix = `${uniquePrefix('start')}.`;
  // A key the operator configured: npm start must keep it and add its dev admin key.
  const ownKey = `own-key-${uniquePrefix('k')}`;
  child = spawn(process.execPath, [join(root, 'scripts', 'start.ts')], {
    cwd: root,
    env: {
      ...process.env,
      PUSHLINE_STATE_DIR: stateDir,
      PUSHLINE_DEV_FREE_PORTS: 'true',
      PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: infra.redisUrl,
      PUSHLINE_TOPIC_PREFIX: prefix,
      PUSHLINE_KEY_PREFIX: `${prefix}:`,
      PUSHLINE_PROCESSOR_GROUP_ID: `${prefix}processor`,
      PUSHLINE_DRAIN_WINDOW_MS: '0',
      PUSHLINE_CLOSE_GRACE_MS: '0',
      PUSHLINE_API_KEYS: `${ownKey}:push`,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  launched.push(child);
  const exited = new Promise<number | null>((resolve) => child?.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const stdout = child.stdout;
  assert.ok(stdout);
  const lines = createInterface({ input: stdout });
  const ready = new Promise<{
    apiUrl: string;
    deviceUrl: string;
    deviceUrls: string[];
    balancerStatsUrl: string;
    consoleUrl: string;
    pids: number[];
    opsUrls: Record<string, string>;
  }>((resolve) => {
    lines.on('line', (line) => {
      if (line.startsWith('PUSHLINE_READY ')) resolve(JSON.parse(line.slice('PUSHLINE_READY '.length)));
    });
  });
  const info = await within(
    Promise.race([
      ready,
      exited.then((code) => Promise.reject(new Error(`start exited ${code}: ${stderr}`))),
    ]),
    120_000,
    'npm start to report ready',
  );

  assert.equal(info.deviceUrls.length, 2);
  // Two connection servers, the processor, the API, the canary and the console.
  assert.equal(info.pids.length, 6);
  // Each ops URL is labelled with its service instance (it used to be a bare list).
  assert.deepEqual(Object.keys(info.opsUrls).sort(), [
    'canary',
    'connection-server-1',
    'connection-server-2',
    'console',
    'message-processor',
    'push-api',
  ]);
  for (const url of [info.apiUrl, ...Object.values(info.opsUrls)]) {
    const health = await fetch(`${url}/healthz`);
    assert.equal(health.status, 200, `${url}/healthz`);
  }

  // The operator's key still works next to the dev admin key (npm start used to replace it).
  const credentials = JSON.parse(readFileSync(join(stateDir, 'dev-credentials.json'), 'utf8')) as {
    apiKey: string;
    deviceJwtSecret: string;
  };
  for (const key of [ownKey, credentials.apiKey]) {
    const res = await fetch(`${info.apiUrl}/v1/devices/nobody/messages`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ payload: 1 }),
    });
    assert.equal(
      res.status,
      404,
      `a push with ${key === ownKey ? 'the own' : 'the dev'} key reaches routing`,
    );
  }

  // .pushline/env holds this run's real URLs and key.
  const env = Object.fromEntries(
    readFileSync(join(stateDir, 'env'), 'utf8')
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  assert.equal(env['PUSHLINE_API'], info.apiUrl);
  assert.equal(env['PUSHLINE_API_KEY'], credentials.apiKey);
  // Devices use the one balancer URL (it used to list the servers' own URLs).
  assert.equal(env['PUSHLINE_DEVICE_URL'], info.deviceUrl);
  assert.equal(env['PUSHLINE_DEVICE_URLS'], info.deviceUrl);
  assert.ok(!info.deviceUrls.includes(info.deviceUrl), 'the balancer is in front of the servers');

  // HAProxy is in front: both servers UP through their agents, and a device connects through it.
  await waitUntil(
    async () => {
      const csv = await (await fetch(`${info.balancerStatsUrl};csv`)).text();
      const up = csv
        .split('\n')
        .filter((l) => /^connection-servers,dev-cs-\d+,/.test(l) && l.includes(',UP,'));
      return up.length === 2;
    },
    { timeoutMs: 20_000, what: 'HAProxy to see both connection servers UP' },
  );
  const token = await mintDevToken(credentials.deviceJwtSecret, {
    device: 'start-d1',
    user: 'u1',
    ttlSeconds: 60,
  });
  const socket = io(info.deviceUrl, { transports: ['websocket'], reconnection: false, auth: { token } });
  try {
    await within(
      new Promise<void>((resolve, reject) => {
        socket.once('connect', () => resolve());
        socket.once('connect_error', reject);
      }),
      10_000,
      'a device to connect through the balancer',
    );
  } finally {
    socket.disconnect();
  }
  assert.equal(env['PUSHLINE_CONSOLE'], `${info.consoleUrl}/console`);

  // This start logs to a folder of its own, and logs/latest points at it.
  const logs = join(stateDir, 'logs');
  const runs = readdirSync(logs).filter((d) => d !== 'latest');
  assert.equal(runs.length, 1);
  assert.ok(existsSync(join(logs, 'latest', 'push-api.log')));

  const kafka = testKafkaClient();
  const admin = kafka.admin();
  try {
    const topics = await admin.listTopics();
    for (const topic of Object.values(topicNames(prefix)))
      assert.ok(topics.includes(topic), `${topic} exists`);
  } finally {
    await admin.close();
  }

  child.kill('SIGTERM');
  assert.equal(await within(exited, 60_000, 'npm start to exit after SIGTERM'), 0);
  await waitUntil(() => info.pids.every((pid) => !alive(pid)), {
    timeoutMs: 20_000,
    what: 'services to exit',
  });
});

interface Launched {
  readonly launcher: ChildProcess;
  readonly info: {
    apiUrl: string;
    deviceUrls: string[];
    pids: number[];
    opsUrls: Record<string, string>;
    redisUrl: string;
  };
  readonly exited: Promise<number | null>;
  stderr(): string;
}

/**
 * Starts `npm start`'s launcher the way a terminal runs a foreground job: in a process group of
 * its own, so signalling the group is what Ctrl-C does.
 */
async function launchInOwnGroup(env: Record<string, string>, args: string[] = []): Promise<Launched> {
  const infra = testInfra();
  const prefix = `${uniquePrefix('ctrlc')}.`;
  const launcher = spawn(process.execPath, [join(root, 'scripts', 'start.ts'), ...args], {
    cwd: root,
    detached: true,
    env: {
      ...process.env,
      PUSHLINE_STATE_DIR: stateDir,
      PUSHLINE_DEV_FREE_PORTS: 'true',
      PUSHLINE_KAFKA_BROKERS: infra.kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: infra.redisUrl,
      PUSHLINE_TOPIC_PREFIX: prefix,
      PUSHLINE_KEY_PREFIX: `${prefix}:`,
      PUSHLINE_PROCESSOR_GROUP_ID: `${prefix}processor`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = launcher;
  launched.push(launcher);
  const exited = new Promise<number | null>((resolve) => launcher.once('exit', (code) => resolve(code)));
  let stderr = '';
  launcher.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const stdout = launcher.stdout;
  assert.ok(stdout);
  const ready = new Promise<Launched['info']>((resolve) => {
    createInterface({ input: stdout }).on('line', (line) => {
      if (line.startsWith('PUSHLINE_READY ')) resolve(JSON.parse(line.slice('PUSHLINE_READY '.length)));
    });
  });
  const info = await within(
    Promise.race([
      ready,
      exited.then((code) => Promise.reject(new Error(`start exited ${code}: ${stderr}`))),
    ]),
    120_000,
    'npm start to report ready',
  );
  return { launcher, info, exited, stderr: () => stderr };
}

/** A device connected to the first connection server, with a token signed by the dev secret. */
async function connectDevice(info: Launched['info'], deviceId: string): Promise<Socket> {
  const { deviceJwtSecret } = JSON.parse(readFileSync(join(stateDir, 'dev-credentials.json'), 'utf8')) as {
    deviceJwtSecret: string;
  };
  const token = await new SignJWT({ uid: 'u-1' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(deviceId)
    .setExpirationTime('10m')
    .sign(new TextEncoder().encode(deviceJwtSecret));
  const url = info.deviceUrls[0];
  assert.ok(url);
  const device = io(url, { transports: ['websocket'], reconnection: false, auth: { token } });
  devices.push(device);
  await within(
    new Promise<void>((resolve, reject) => {
      device.once('connect', () => resolve());
      device.once('connect_error', reject);
    }),
    10_000,
    `${deviceId} to connect`,
  );
  return device;
}

/** What the device saw first: its reconnect hint, or the end of its connection. */
function firstEnding(device: Socket): Promise<{ hint: unknown } | { disconnect: string }> {
  return new Promise((resolve) => {
    device.once(DeviceEvents.reconnect, (hint: unknown) => resolve({ hint }));
    device.once('disconnect', (reason) => resolve({ disconnect: reason }));
  });
}

/** Ctrl-C in the launcher's terminal: SIGINT to its whole process group. */
function ctrlC(launcher: ChildProcess): void {
  assert.ok(launcher.pid);
  process.kill(-launcher.pid, 'SIGINT');
}

test('Ctrl-C on npm start drains: devices get their reconnect hint, then everything exits 0', async () => {
  // Its own Redis this time (PUSHLINE_REDIS_URL empty), with the append-only file asked for.
  const { launcher, info, exited, stderr } = await launchInOwnGroup(
    { PUSHLINE_DRAIN_WINDOW_MS: '0', PUSHLINE_CLOSE_GRACE_MS: '1000', PUSHLINE_REDIS_URL: '' },
    ['--redis-aof'],
  );
  assert.notEqual(info.redisUrl, testInfra().redisUrl);
  const redis = new Redis(info.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0 });
  try {
    await redis.connect();
    assert.deepEqual(await redis.config('GET', 'appendonly'), ['appendonly', 'yes']);
    assert.deepEqual(await redis.config('GET', 'maxmemory-policy'), ['maxmemory-policy', 'noeviction']);
    assert.equal(await redis.config('GET', 'dir').then((r) => (r as string[])[1]), join(stateDir, 'redis'));
  } finally {
    redis.disconnect();
  }
  const device = await connectDevice(info, 'ctrl-c-phone');
  const ending = firstEnding(device);

  ctrlC(launcher);

  assert.deepEqual(await within(ending, 20_000, 'the device to hear of the shutdown'), {
    hint: { reason: 'server_shutdown', afterMs: 0 },
  });
  assert.equal(await within(exited, 60_000, 'npm start to exit after Ctrl-C'), 0, stderr());
  await waitUntil(() => info.pids.every((pid) => !alive(pid)), {
    timeoutMs: 20_000,
    what: 'services to exit',
  });
  assert.match(stderr(), /redis stopped/, 'the launcher stopped its Redis after the services');
  assert.ok(
    existsSync(join(stateDir, 'redis', 'appendonlydir')),
    'the append-only file is kept for the next run',
  );
});

test('a second Ctrl-C forces the exit while the drain is still waiting', async () => {
  // A grace and a deadline far longer than the test waits: only a forced exit ends within its bound.
  const { launcher, info, exited, stderr } = await launchInOwnGroup({
    PUSHLINE_DRAIN_WINDOW_MS: '0',
    PUSHLINE_CLOSE_GRACE_MS: '600000',
    PUSHLINE_SHUTDOWN_DEADLINE_MS: '600000',
  });
  const device = await connectDevice(info, 'ctrl-c-twice-phone');
  const ending = firstEnding(device);

  ctrlC(launcher);
  const firstAt = Date.now();
  assert.deepEqual(await within(ending, 20_000, 'the device to hear of the shutdown'), {
    hint: { reason: 'server_shutdown', afterMs: 0 },
  });
  // Not synchronisation: a person's second keypress comes later than the launcher's window that
  // merges the copy of the first one npm may forward (SAME_KEYPRESS_MS in scripts/start.ts).
  await sleep(Math.max(0, firstAt + 500 - Date.now()));
  ctrlC(launcher);

  assert.equal(await within(exited, 60_000, 'npm start to exit after a second Ctrl-C'), 130, stderr());
  await waitUntil(() => info.pids.every((pid) => !alive(pid)), {
    timeoutMs: 20_000,
    what: 'services to exit',
  });
  assert.match(stderr(), /SIGINT again: forcing/);
});
