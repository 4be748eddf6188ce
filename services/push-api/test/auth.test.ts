import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ApiKeyStore, apiKeyId } from '../src/auth.ts';

const ADMIN = 'admin-key-0123456789abcdef0123456789';
const PUSH = 'push-key-0123456789abcdef0123456789ab';

describe('ApiKeyStore (pure logic)', () => {
  const store = () =>
    new ApiKeyStore([
      { key: ADMIN, scopes: ['admin'] },
      { key: PUSH, scopes: ['push'] },
    ]);

  it('authenticates each configured key, the same principal from the verified-key cache', () => {
    const keys = store();
    const first = keys.authenticate(PUSH);
    assert.equal(first?.id, apiKeyId(PUSH));
    assert.deepEqual([...(first?.scopes ?? [])], ['push']);
    assert.equal(keys.authenticate(PUSH), first, 'a repeated key is answered from the cache');
    assert.deepEqual([...(keys.authenticate(ADMIN)?.scopes ?? [])], ['admin']);
  });

  it('refuses wrong keys, prefixes and extensions of valid keys, before and after the valid one was cached', () => {
    const keys = store();
    const wrong = ['', 'nope', PUSH.slice(0, -1), `${PUSH}x`, PUSH.toUpperCase()];
    for (const key of wrong) assert.equal(keys.authenticate(key), undefined, key);
    assert.ok(keys.authenticate(PUSH));
    for (const key of wrong) assert.equal(keys.authenticate(key), undefined, `${key} after a hit`);
  });
});
