import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

const root = join(import.meta.dirname, '..');
const run = (script: string, ...args: string[]) =>
  spawnSync(process.execPath, [join(root, 'scripts', script), ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, PUSHLINE_DEVICE_JWT_SECRET: 'x'.repeat(40) },
    timeout: 30_000,
  });

for (const script of ['token.ts', 'device.ts']) {
  test(`${script} --help prints its usage, not a stack trace`, () => {
    const help = run(script, '--help');
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^usage: npm run/);
    assert.doesNotMatch(help.stdout + help.stderr, /Error| {4}at /);
  });

  test(`${script} with an unknown option says so and prints its usage`, () => {
    const bad = run(script, '--no-such-option');
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /Unknown option '--no-such-option'/);
    assert.match(bad.stderr, /usage: npm run/);
    assert.doesNotMatch(bad.stderr, / {4}at /);
  });
}

test('token.ts mints a token for a device and user', () => {
  const minted = run('token.ts', '--device', 'd1', '--user', 'u1');
  assert.equal(minted.status, 0, minted.stderr);
  const [, payload] = minted.stdout.trim().split('.');
  const claims = JSON.parse(Buffer.from(payload ?? '', 'base64url').toString()) as {
    sub: string;
    uid: string;
  };
  assert.deepEqual([claims.sub, claims.uid], ['d1', 'u1']);
});
