import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import { within } from '@pushline/testkit';

const FIXTURE = new URL('./fixtures/stuck-service.ts', import.meta.url).pathname;

/** Boots the fixture in `mode`, SIGTERMs it once it is ready, and returns its exit code and log lines. */
async function stopFixture(mode: string): Promise<{ code: number | null; lines: Record<string, unknown>[] }> {
  const child = spawn(process.execPath, [FIXTURE, mode], {
    env: { ...process.env, SHUTDOWN_DEADLINE_MS: mode === 'leaks' ? '20000' : '1000' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  // Every line read: the output closes after the exit.
  const outputClosed = once(child.stdout, 'close');
  const lines: Record<string, unknown>[] = [];
  const ready = new Promise<void>((resolve) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line === 'READY') resolve();
      else if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
    });
  });
  try {
    await within(ready, 20_000, `${mode} fixture to boot`);
    child.kill('SIGTERM');
    const [code] = await within(exited, 30_000, `${mode} fixture to exit after SIGTERM`);
    await within(outputClosed, 10_000, `${mode} fixture output to close`);
    return { code, lines };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

test('past the shutdown deadline a service logs the step that hung and exits 1', async () => {
  const { code, lines } = await stopFixture('hangs');
  assert.equal(code, 1);
  const deadline = lines.find((l) => String(l['msg']).includes('shutdown deadline'));
  assert.ok(deadline, `no deadline line in ${JSON.stringify(lines)}`);
  assert.equal(deadline['deadlineMs'], 1000);
  const hung = deadline['hung'] as { step: string; runningMs: number }[];
  assert.deepEqual(
    hung.map((h) => h.step),
    ['quit stuck dependency'],
  );
  assert.ok((hung[0]?.runningMs ?? 0) >= 900);
});

test('a close that waits on nothing that can ever happen exits 1 instead of 0', async () => {
  const { code, lines } = await stopFixture('stalls');
  assert.equal(code, 1);
  assert.ok(
    lines.some((l) => String(l['msg']).includes('shutdown stalled')),
    `no stall line in ${JSON.stringify(lines)}`,
  );
});

test('a close that finished but left work running does not wait for the deadline', async () => {
  const { code, lines } = await stopFixture('leaks');
  assert.equal(code, 0, 'its close succeeded');
  const line = lines.find((l) => String(l['msg']).includes('abandoned work keeps the process alive'));
  assert.ok(line, `no leak line in ${JSON.stringify(lines)}`);
  assert.ok((line['resources'] as string[]).includes('Timeout'));
  assert.ok(!lines.some((l) => String(l['msg']).includes('shutdown deadline')));
});

test('a close that finishes exits 0 without waiting for the deadline timer', async () => {
  const { code, lines } = await stopFixture('clean');
  assert.equal(code, 0);
  assert.ok(lines.some((l) => l['msg'] === 'stuck-service stopped'));
});
