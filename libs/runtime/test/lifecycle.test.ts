import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CleanupError,
  CleanupStepTimeoutError,
  activeCleanupSteps,
  backoffMs,
  cleanupStepTimeoutChannel,
  closeOnce,
  runCleanup,
} from '@pushline/runtime';

test('runCleanup runs every step even when some fail, then names the failures', async () => {
  const ran: string[] = [];
  await assert.rejects(
    runCleanup([
      { name: 'a', run: () => void ran.push('a') },
      {
        name: 'b',
        run: () => {
          ran.push('b');
          throw new Error('boom');
        },
      },
      { name: 'c', run: async () => void ran.push('c') },
    ]),
    (err: unknown) => err instanceof CleanupError && /b: boom/.test(err.message) && err.errors.length === 1,
  );
  assert.deepEqual(ran, ['a', 'b', 'c']);
});

test('closeOnce runs the close function once and shares its promise', async () => {
  let calls = 0;
  const close = closeOnce(async () => void calls++);
  const [first, second] = [close(), close()];
  assert.equal(first, second);
  await first;
  await close();
  assert.equal(calls, 1);
});

test('backoffMs stays within its ceiling', () => {
  for (let attempt = 0; attempt < 30; attempt++) {
    const ms = backoffMs(attempt, 100, 5_000);
    assert.ok(ms >= 0 && ms < 5_000);
  }
});

test('runCleanup abandons a step that hangs past its bound, names it, and still runs the next ones', async () => {
  const ran: string[] = [];
  const published: unknown[] = [];
  const onTimeout = (message: unknown) => published.push(message);
  cleanupStepTimeoutChannel.subscribe(onTimeout);
  let hangs: NodeJS.Timeout | undefined;
  try {
    const error = await runCleanup([
      { name: 'first', run: () => void ran.push('first') },
      {
        name: 'hangs',
        timeoutMs: 50,
        // Held open by a timer, as a socket that never answers would hold it.
        run: () => new Promise<void>((resolve) => (hangs = setTimeout(resolve, 60_000))),
      },
      { name: 'last', run: () => void ran.push('last') },
    ]).then(
      () => assert.fail('resolved'),
      (err: unknown) => err,
    );
    assert.ok(error instanceof CleanupError);
    assert.equal(error.errors.length, 1);
    const [timedOut] = error.errors as unknown[];
    assert.ok(timedOut instanceof CleanupStepTimeoutError);
    assert.equal(timedOut.step, 'hangs');
    assert.equal(timedOut.timeoutMs, 50);
    assert.match(error.message, /hangs: did not finish within 50 ms/);
    assert.deepEqual(ran, ['first', 'last']);
    assert.deepEqual(published, [timedOut]);
  } finally {
    cleanupStepTimeoutChannel.unsubscribe(onTimeout);
    clearTimeout(hangs);
  }
});

test('runCleanup applies its default bound to steps that name none, and names nested steps by their path', async () => {
  let hangs: NodeJS.Timeout | undefined;
  let seenWhileRunning: string[] = [];
  const error = await runCleanup(
    [
      {
        name: 'service',
        timeoutMs: Infinity,
        run: () =>
          runCleanup(
            [
              {
                name: 'producer',
                run: () =>
                  new Promise<void>((resolve) => {
                    seenWhileRunning = activeCleanupSteps().map((s) => s.step);
                    hangs = setTimeout(resolve, 60_000);
                  }),
              },
            ],
            { stepTimeoutMs: 40 },
          ),
      },
    ],
    { stepTimeoutMs: 60_000 },
  ).then(
    () => assert.fail('resolved'),
    (err: unknown) => err,
  );
  clearTimeout(hangs);
  assert.deepEqual(seenWhileRunning, ['service', 'service › producer']);
  assert.ok(error instanceof CleanupError);
  assert.match(error.message, /service › producer: did not finish within 40 ms/);
  assert.deepEqual(activeCleanupSteps(), [], 'nothing is left listed as running');
});

test('runCleanup leaves a step that finishes in time alone (no timer left behind)', async () => {
  const started = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  await runCleanup([{ name: 'quick', run: async () => {} }], { stepTimeoutMs: 60_000 });
  const after = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
  assert.equal(after, started);
});
