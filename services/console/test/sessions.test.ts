import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConsoleSessions } from '../src/sessions.ts';

const admin = { key: 'admin-key-0123456789', scopes: ['admin'] as const };
const pusher = { key: 'push-key-0123456789ab', scopes: ['push', 'publish'] as const };

test('only an admin key opens a session; the session id is opaque and the key stays on the server', () => {
  const sessions = new ConsoleSessions([admin, pusher], 60_000);
  assert.deepEqual(sessions.signIn('no-such-key-000000000'), { refused: 'unknown_key' });
  assert.deepEqual(sessions.signIn(pusher.key), { refused: 'not_admin' });
  const opened = sessions.signIn(admin.key);
  assert.ok('id' in opened);
  assert.ok(!opened.id.includes(admin.key));
  assert.ok(opened.id.length >= 40);
  assert.equal(sessions.keyOf(opened.id), admin.key);
  assert.equal(sessions.keyOf('forged'), undefined);
  assert.equal(sessions.keyOf(undefined), undefined);
  sessions.signOut(opened.id);
  assert.equal(sessions.keyOf(opened.id), undefined);
});

test('a session ends when its time is up', () => {
  const sessions = new ConsoleSessions([admin], 0);
  const opened = sessions.signIn(admin.key);
  assert.ok('id' in opened);
  assert.equal(sessions.keyOf(opened.id), undefined);
});
