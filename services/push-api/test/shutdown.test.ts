import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { ConnectionServer } from '@pushline/connection-server';
import { testInfra, waitUntil, within } from '@pushline/testkit';
import { call } from './harness.ts';
import { startPlatform, type Platform } from './platform.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

interface Child {
  readonly proc: ChildProcess;
  readonly url: Promise<{ readonly url: string; readonly opsUrl: string }>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output(): string;
}

/** Runs `node services/push-api/src/main.ts` as an operator would, on the platform's prefix. */
function spawnApi(p: Platform, key: string): Child {
  const proc = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env['PATH'] ?? '',
      PUSHLINE_KAFKA_BROKERS: testInfra().kafkaBrokers.join(','),
      PUSHLINE_REDIS_URL: testInfra().redisUrl,
      PUSHLINE_TOPIC_PREFIX: `${p.h.prefix}.`,
      PUSHLINE_KEY_PREFIX: p.h.keyPrefix,
      PUSHLINE_KAFKA_PARTITIONS: '3',
      PUSHLINE_INTERNAL_TOKEN: p.h.internalToken,
      PUSHLINE_API_HOST: '127.0.0.1',
      PUSHLINE_API_PORT: '0',
      PUSHLINE_API_OPS_HOST: '127.0.0.1',
      PUSHLINE_API_OPS_PORT: '0',
      PUSHLINE_API_KEYS: `${key}:admin`,
      PUSHLINE_LOG_LEVEL: 'info',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let resolveUrl!: (urls: { url: string; opsUrl: string }) => void;
  const url = new Promise<{ url: string; opsUrl: string }>((resolve) => (resolveUrl = resolve));
  const onData = (chunk: Buffer) => {
    out += chunk.toString('utf8');
    const line = out.split('\n').find((l) => l.includes('"msg":"push-api listening"'));
    if (line) resolveUrl(JSON.parse(line) as { url: string; opsUrl: string });
  };
  proc.stdout?.on('data', onData);
  proc.stderr?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  const exited = once(proc, 'exit').then(([code, signal]) => ({
    code: code as number | null,
    signal: signal as NodeJS.Signals | null,
  }));
  return { proc, url, exited, output: () => out };
}

describe('push-api process', () => {
  let p: Platform;
  let child: Child | undefined;
  before(async () => {
    p = await startPlatform('sigterm', { servers: 1 });
  });
  after(async () => {
    if (child && child.proc.exitCode === null && child.proc.signalCode === null) {
      child.proc.kill('SIGKILL');
      await child.exited;
    }
    await p.close();
  });

  it('finishes the request in flight after SIGTERM, then exits 0 by itself', async () => {
    const key = `k-sigterm-${p.h.prefix}`;
    child = spawnApi(p, key);
    const started = child;
    const { url, opsUrl } = await within(
      started.url,
      30_000,
      `push-api to listen (output: ${started.output()})`,
    );
    await waitUntil(async () => (await call(opsUrl, 'GET', '/readyz')).status === 200, {
      timeoutMs: 20_000,
      what: 'push-api ready',
    });

    const [server] = p.servers as [ConnectionServer];
    const device = await p.connect(server, 'sig-dev', 'sig-user', 'silent');
    const received = device.nextMessage();
    const inFlight = call(url, 'POST', '/v1/devices/sig-dev/messages', {
      key,
      body: { payload: 'slow', timeoutMs: 1_000 },
    });
    await received;
    started.proc.kill('SIGTERM');

    const res = await inFlight;
    assert.equal(res.status, 504, JSON.stringify(res.body));
    assert.equal((res.body as { outcome: string }).outcome, 'timeout');
    assert.equal(res.headers.get('connection'), 'close');

    const exit = await within(started.exited, 20_000, `push-api to exit (output: ${started.output()})`);
    assert.deepEqual(exit, { code: 0, signal: null }, started.output());
    assert.match(started.output(), /push-api stopped/);
  });
});
