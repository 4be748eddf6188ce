import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { renderConfigTable } from '@pushline/config';

const root = join(import.meta.dirname, '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

test('the README configuration table matches the config schemas', () => {
  const begin = '<!-- config-table:begin -->';
  const table = readme.slice(
    readme.indexOf(begin) + begin.length,
    readme.indexOf('<!-- config-table:end -->'),
  );
  assert.equal(table.trim(), renderConfigTable().trim(), 'run `node scripts/config-docs.ts` to regenerate');
});

test('the README gives the two commands', () => {
  assert.match(readme, /^npm start\b/m);
  assert.match(readme, /^npm test\b/m);
});
