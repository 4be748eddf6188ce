import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { PROBLEM_TYPE_BASE, Problem } from '../src/index.ts';
import { call, startApi, type ApiHarness, type CallResult } from './harness.ts';

function assertProblem(res: CallResult, status: number, code: string): Problem {
  assert.equal(res.status, status, JSON.stringify(res.body).slice(0, 500));
  assert.match(res.contentType, /^application\/problem\+json/);
  const problem = Problem.parse(res.body);
  assert.equal(problem.type, `${PROBLEM_TYPE_BASE}${code}`);
  return problem;
}

describe('push-api: the per-key quota of stored messages', () => {
  let h: ApiHarness;
  before(async () => {
    h = await startApi({ label: 'quota', env: { PUSHLINE_OFFLINE_QUOTA_MESSAGES: '2' } });
  });
  after(() => h.close());

  const pushTo = (key: string, deviceId: string) =>
    call(h.url, 'POST', `/v1/devices/${deviceId}/messages`, {
      key,
      body: { payload: { to: deviceId }, ttlSeconds: 3600 },
    });

  it('stores for made-up devices up to the quota, then answers 507 quota-exceeded; other keys go on', async () => {
    for (const device of ['made-up-1', 'made-up-2']) {
      const res = await pushTo(h.keys.push, device);
      assert.equal(res.status, 202, JSON.stringify(res.body));
    }
    const refused = assertProblem(await pushTo(h.keys.push, 'made-up-3'), 507, 'quota-exceeded');
    assert.match(refused.detail ?? '', /quota/);
    assert.equal(await h.redis.exists(`${h.keyPrefix}offline:q:made-up-3`), 0, 'nothing stored');
    // Another API key has its own quota, and the same message id stays its own.
    assert.equal((await pushTo(h.keys.admin, 'made-up-3')).status, 202);

    // A user push reports the refusal per device instead of hiding the others' outcomes.
    await h.registry.register(
      {
        deviceId: 'quota-phone',
        userId: 'quota-user',
        serverId: 'gone',
        serverUrl: 'http://127.0.0.1:1',
        connectionId: 'c-1',
        connectedAt: Date.now(),
        lastSeen: Date.now(),
      },
      60,
    );
    const user = await call(h.url, 'POST', '/v1/users/quota-user/messages', {
      key: h.keys.push,
      body: { payload: 1, ttlSeconds: 60 },
    });
    assert.equal(user.status, 200, JSON.stringify(user.body));
    assert.deepEqual(
      (user.body as { results: { outcome: string; reason?: string }[] }).results.map((r) => [
        r.outcome,
        r.reason,
      ]),
      [['not_connected', 'quota_exceeded']],
    );
  });
});
