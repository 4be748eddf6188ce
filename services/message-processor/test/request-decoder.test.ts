import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { decodePushRequest } from '@pushline/message-processor';

const valid = {
  v: 1,
  id: 'req-1',
  target: { type: 'device', id: 'dev-1' },
  payload: { hello: 'world' },
  ttlSeconds: 60,
  createdAt: 1_700_000_000_000,
};

const buf = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));

describe('decodePushRequest', () => {
  it('accepts a v1 request', () => {
    const result = decodePushRequest(buf(valid), 4096);
    assert.deepEqual(result, { ok: true, request: valid });
  });

  it('calls empty and non-JSON values unparseable', () => {
    for (const value of [null, Buffer.alloc(0), buf('{not json'), buf('\u0000\u0001')]) {
      const result = decodePushRequest(value, 4096);
      assert.equal(result.ok, false);
      if (!result.ok) assert.equal(result.reason, 'unparseable');
    }
  });

  it('calls JSON that is not a v1 request schema_invalid and names the field', () => {
    const cases: [unknown, RegExp][] = [
      [{ ...valid, v: 2 }, /^v:/],
      [{ ...valid, target: { type: 'group', id: 'x' } }, /target/],
      [{ ...valid, id: 'has space' }, /^id:/],
      [{ ...valid, ttlSeconds: -1 }, /ttlSeconds/],
      [[1, 2], /\(root\)/],
      ['"just a string"', /\(root\)/],
    ];
    for (const [value, detail] of cases) {
      const result = decodePushRequest(buf(value), 4096);
      assert.equal(result.ok, false, JSON.stringify(value));
      if (!result.ok) {
        assert.equal(result.reason, 'schema_invalid');
        assert.match(result.detail, detail);
      }
    }
  });

  it('calls a payload over the limit payload_too_large, at exactly the limit fine', () => {
    const payload = 'x'.repeat(98); // JSON string of 100 bytes
    assert.equal(decodePushRequest(buf({ ...valid, payload }), 100).ok, true);
    const result = decodePushRequest(buf({ ...valid, payload }), 99);
    assert.equal(result.ok, false);
    if (!result.ok) {
      assert.equal(result.reason, 'payload_too_large');
      assert.match(result.detail, /100 bytes, the limit is 99/);
    }
  });

  it('keeps the detail short for huge invalid records', () => {
    const huge = {
      ...valid,
      target: Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, i])),
    };
    const result = decodePushRequest(buf(huge), 4096);
    assert.equal(result.ok, false);
    if (!result.ok) assert.ok(result.detail.length <= 512);
  });
});
