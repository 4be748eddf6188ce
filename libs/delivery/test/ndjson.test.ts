import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LineSplitter, LineTooLongError } from '../src/ndjson.ts';

describe('LineSplitter', () => {
  it('returns the complete lines of each chunk and keeps the rest for the next', () => {
    const s = new LineSplitter(100);
    assert.deepEqual(s.push(Buffer.from('one\ntw')), ['one']);
    assert.deepEqual(s.push(Buffer.from('o\nthree\n')), ['two', 'three']);
    assert.deepEqual(s.push(Buffer.from('fo')), []);
    assert.deepEqual(s.push(Buffer.from('ur')), []);
    assert.equal(s.end(), 'four');
    assert.equal(s.end(), undefined);
  });

  it('joins a multi-byte character cut between chunks before decoding its line', () => {
    const bytes = Buffer.from('{"reason":"✋"}\n');
    const cut = bytes.indexOf(Buffer.from('✋')) + 2;
    const s = new LineSplitter(100);
    assert.deepEqual(s.push(bytes.subarray(0, cut)), []);
    assert.deepEqual(s.push(bytes.subarray(cut)), ['{"reason":"✋"}']);
    assert.equal(s.end(), undefined);
  });

  it('keeps empty lines (the caller skips them) and throws past the line limit', () => {
    assert.deepEqual(new LineSplitter(10).push(Buffer.from('\n\na\n')), ['', '', 'a']);
    assert.throws(() => new LineSplitter(4).push(Buffer.from('12345\n')), LineTooLongError);
    const s = new LineSplitter(4);
    s.push(Buffer.from('123'));
    assert.throws(() => s.push(Buffer.from('45')), LineTooLongError, 'an incomplete line counts too');
  });
});
