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
const limits = (maxPayloadBytes = 4096) => ({ maxPayloadBytes, maxDepth: 32, maxRecordBytes: 65_536 });

describe('decodePushRequest', () => {
  it('accepts a v1 request', () => {
    const result = decodePushRequest(buf(valid), limits());
    assert.deepEqual(result, { ok: true, request: valid });
  });

  it('calls a tombstone, empty and non-JSON values unparseable', () => {
    for (const value of [null, Buffer.alloc(0), buf('{not json'), buf('\u0000\u0001')]) {
      const result = decodePushRequest(value, limits());
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
      const result = decodePushRequest(buf(value), limits());
      assert.equal(result.ok, false, JSON.stringify(value));
      if (!result.ok) {
        assert.equal(result.reason, 'schema_invalid');
        assert.match(result.detail, detail);
      }
    }
  });

  it('calls a payload over the limit payload_too_large, at exactly the limit fine', () => {
    const payload = 'x'.repeat(98); // JSON string of 100 bytes
    assert.equal(decodePushRequest(buf({ ...valid, payload }), limits(100)).ok, true);
    const result = decodePushRequest(buf({ ...valid, payload }), limits(99));
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
    const result = decodePushRequest(buf(huge), limits());
    assert.equal(result.ok, false);
    if (!result.ok) assert.ok(result.detail.length <= 512);
  });

  it('refuses a payload nested deeper than the limit before parsing it, at the limit fine', () => {
    const nest = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);
    const at = `{"v":1,"id":"deep","target":{"type":"device","id":"d"},"createdAt":1,"payload":${nest(32)}}`;
    assert.equal(decodePushRequest(buf(at), limits()).ok, true);
    for (const depth of [33, 2_000, 100_000]) {
      const text = `{"v":1,"id":"deep","target":{"type":"device","id":"d"},"createdAt":1,"payload":${nest(depth)}}`;
      const result = decodePushRequest(buf(text), { ...limits(), maxRecordBytes: 1_000_000 });
      assert.equal(result.ok, false, `depth ${depth}`);
      if (!result.ok) assert.equal(result.reason, 'too_deep');
    }
    // Brackets inside strings are not nesting.
    const inString = { ...valid, payload: { text: '['.repeat(1_000) } };
    assert.equal(decodePushRequest(buf(inString), limits()).ok, true);
  });

  it('refuses a record over the record limit unread', () => {
    const result = decodePushRequest(buf({ ...valid, payload: 'x'.repeat(200) }), {
      ...limits(),
      maxRecordBytes: 100,
    });
    assert.equal(result.ok, false);
    if (!result.ok) {
      assert.equal(result.reason, 'payload_too_large');
      assert.match(result.detail, /^record is \d+ bytes, the limit is 100$/);
    }
  });
});
