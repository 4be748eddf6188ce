import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DedupeWindow } from '../src/dedupe.ts';

test('the dedupe window remembers the newest ids up to its capacity', () => {
  const window = new DedupeWindow<string>(2);
  window.remember('a', 'A');
  window.remember('b', 'B');
  window.remember('a', 'A2'); // refreshed: now the newest
  window.remember('c', 'C');
  assert.equal(window.get('b'), undefined, 'the oldest is forgotten');
  assert.equal(window.get('a'), 'A2');
  assert.equal(window.get('c'), 'C');
  assert.equal(window.size, 2);
  assert.throws(() => new DedupeWindow(0), RangeError);
});
