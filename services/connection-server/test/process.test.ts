import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ReconnectHint } from '@pushline/protocol';
import { waitUntil, within } from '@pushline/testkit';
import { createWorld, disconnected, nextEvent, type TestWorld } from './helpers.ts';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));

interface Child {
  readonly proc: ChildProcess;
  readonly deviceUrl: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly output: () => string;
}

/** Runs `node src/main.ts` with the world's environment and waits for its "started" log line. */
async function spawnServer(world: TestWorld, env: Record<string, string>): Promise<Child> {
  const proc = spawn(process.execPath, [MAIN], {
    env: { PATH: process.env['PATH'] ?? '', ...world.env({ PUSHLINE_LOG_LEVEL: 'info', ...env }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => resolve({ code, signal })),
  );
  const started = new Promise<string>((resolve, reject) => {
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      for (const line of out.split('\n')) {
        if (!line.includes('connection server started')) continue;
        resolve((JSON.parse(line) as { deviceUrl: string }).deviceUrl);
      }
    });
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    void exited.then(({ code }) => reject(new Error(`server exited early (${code}):\n${out}`)));
  });
  let deviceUrl: string;
  try {
    deviceUrl = await within(started, 30_000, 'child server to start');
  } catch (err) {
    // Not the caller's yet: a server that never started must not outlive the test (its pipes
    // would keep the test process alive).
    proc.kill('SIGKILL');
    throw err;
  }
  return { proc, deviceUrl, exited, output: () => out };
}

describe('connection-server process', () => {
  let world: TestWorld;
  const children: ChildProcess[] = [];
  beforeEach(async () => {
    world = await createWorld('process');
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await world.close();
  });

  it('kill -9 leaves entries that expire by TTL, and a restart with the same id clears them at boot', async () => {
    const serverId = 'srv-crash';
    // Crash 1: the entry outlives the process, then expires by its TTL.
    const first = await spawnServer(world, {
      PUSHLINE_SERVER_ID: serverId,
      PUSHLINE_REGISTRY_TTL_S: '2',
      PUSHLINE_REGISTRY_REFRESH_S: '1',
    });
    children.push(first.proc);
    const device = await world.connect(first.deviceUrl, await world.token({ sub: 'dev-1' }));
    await waitUntil(() => world.registry.lookup('dev-1'), { what: 'entry' });
    first.proc.kill('SIGKILL');
    assert.equal((await first.exited).signal, 'SIGKILL');
    await disconnected(device);
    assert.notEqual(await world.registry.lookup('dev-1'), null, 'the entry survives the crash');
    await waitUntil(async () => (await world.registry.lookup('dev-1')) === null, {
      timeoutMs: 6_000,
      what: 'the stale entry to expire',
    });

    // Crash 2 with a long TTL: only the restart can explain the entry going away.
    const second = await spawnServer(world, {
      PUSHLINE_SERVER_ID: serverId,
      PUSHLINE_REGISTRY_TTL_S: '600',
      PUSHLINE_REGISTRY_REFRESH_S: '60',
    });
    children.push(second.proc);
    await world.connect(second.deviceUrl, await world.token({ sub: 'dev-2' }));
    await waitUntil(() => world.registry.lookup('dev-2'), { what: 'entry' });
    second.proc.kill('SIGKILL');
    await second.exited;
    assert.equal((await world.registry.lookup('dev-2'))?.serverId, serverId);

    const third = await spawnServer(world, {
      PUSHLINE_SERVER_ID: serverId,
      PUSHLINE_REGISTRY_TTL_S: '600',
      PUSHLINE_REGISTRY_REFRESH_S: '60',
    });
    children.push(third.proc);
    assert.equal(await world.registry.lookup('dev-2'), null, 'cleared at boot');
    assert.match(third.output(), /cleared stale registry entries/);
    third.proc.kill('SIGTERM');
    assert.equal((await third.exited).code, 0);
  });

  it('SIGTERM drains: reconnect hints spread over the window, entries removed, exit 0', async () => {
    const child = await spawnServer(world, {
      PUSHLINE_SERVER_ID: 'srv-term',
      PUSHLINE_DRAIN_WINDOW_MS: '2000',
      PUSHLINE_CLOSE_GRACE_MS: '500',
    });
    children.push(child.proc);
    const devices = [];
    for (let i = 0; i < 3; i++)
      devices.push(await world.connect(child.deviceUrl, await world.token({ sub: `dev-${i}` })));
    await waitUntil(
      async () => (await world.registry.lookupMany(['dev-0', 'dev-1', 'dev-2'])).every((r) => r !== null),
      {
        what: 'entries',
      },
    );
    const hints = devices.map((d) => nextEvent(d, 'reconnect_hint', 10_000));
    const closes = devices.map((d) => disconnected(d, 10_000));

    child.proc.kill('SIGTERM');
    for (const hint of await Promise.all(hints)) {
      const parsed = ReconnectHint.parse(hint);
      assert.equal(parsed.reason, 'server_shutdown');
      assert.ok(parsed.afterMs >= 0 && parsed.afterMs <= 2000);
    }
    assert.deepEqual(await Promise.all(closes), [
      'io server disconnect',
      'io server disconnect',
      'io server disconnect',
    ]);
    const exit = await within(child.exited, 15_000, 'the process to exit by itself');
    assert.equal(exit.code, 0, child.output());
    assert.deepEqual(await world.registry.lookupMany(['dev-0', 'dev-1', 'dev-2']), [null, null, null]);
    assert.deepEqual(await world.registry.liveServers(), []);
  });
});
