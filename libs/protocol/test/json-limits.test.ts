import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkJsonValue, JSON_DEPTH_CEILING, JsonPayload, jsonTextTooDeep } from '@pushline/protocol';

const nestedArrays = (depth: number) => '['.repeat(depth) + ']'.repeat(depth);

describe('jsonTextTooDeep', () => {
  test('counts arrays and objects, a scalar being depth 0', () => {
    assert.equal(jsonTextTooDeep('1', 0), false);
    assert.equal(jsonTextTooDeep('[]', 0), true);
    assert.equal(jsonTextTooDeep('[]', 1), false);
    assert.equal(jsonTextTooDeep('{"a":[{"b":1}]}', 3), false);
    assert.equal(jsonTextTooDeep('{"a":[{"b":1}]}', 2), true);
  });

  test('skips brackets inside strings, escaped quotes included', () => {
    assert.equal(jsonTextTooDeep('"[[[[[[["', 1), false);
    assert.equal(jsonTextTooDeep('["\\"[[[[", 1]', 1), false);
    assert.equal(jsonTextTooDeep('["\\\\", [[1]]]', 2), true);
  });

  test('reads bytes as well as strings, and scans 100 000 levels without recursion', () => {
    const text = nestedArrays(100_000);
    assert.equal(jsonTextTooDeep(text, 32), true);
    assert.equal(jsonTextTooDeep(Buffer.from(text), 32), true);
    assert.equal(jsonTextTooDeep(Buffer.from(nestedArrays(32)), 32), false);
  });
});

describe('checkJsonValue', () => {
  test('accepts JSON values within the depth', () => {
    assert.equal(checkJsonValue({ a: [1, 'x', null, true, { b: {} }] }, 4), undefined);
    assert.equal(checkJsonValue(Object.create(null) as object, 1), undefined);
  });

  test('refuses a value nested deeper than allowed, at any depth, without overflowing', () => {
    assert.equal(checkJsonValue({ a: [[1]] }, 2), 'too_deep');
    assert.equal(checkJsonValue(JSON.parse(nestedArrays(100_000)), 32), 'too_deep');
  });

  test('refuses what JSON cannot hold', () => {
    for (const v of [
      undefined,
      NaN,
      Infinity,
      () => 1,
      1n,
      Symbol('s'),
      new Date(0),
      new Map(),
      [1, undefined],
    ]) {
      assert.equal(checkJsonValue(v, 8), 'not_json', String(v));
    }
  });
});

describe('JsonPayload', () => {
  test('accepts JSON up to the ceiling and refuses deeper payloads with an issue, not a stack overflow', () => {
    assert.equal(JsonPayload.safeParse(JSON.parse(nestedArrays(JSON_DEPTH_CEILING))).success, true);
    const deep = JsonPayload.safeParse(JSON.parse(nestedArrays(50_000)));
    assert.equal(deep.success, false);
    assert.equal(JsonPayload.safeParse(undefined).success, false);
  });
});
