import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CleanupError, backoffMs, closeOnce, runCleanup } from '@pushline/runtime';

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
