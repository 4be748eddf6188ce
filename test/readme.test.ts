import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { renderConfigTable } from '@pushline/config';
import { readmeSizeLine, sdkSizeLine } from '../scripts/sdk-size.ts';

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

test('the README reports the SDK browser bundle size as measured now', async () => {
  assert.equal(
    readmeSizeLine(readme),
    await sdkSizeLine(),
    'run `node scripts/sdk-size.ts --write` to update it',
  );
});

test('the README shows the console and demo screenshots, which exist', () => {
  for (const image of ['docs/images/console.png', 'docs/images/demo.png']) {
    assert.ok(readme.includes(`](${image})`), `README shows ${image}`);
    assert.ok(readFileSync(join(root, image)).subarray(1, 4).toString() === 'PNG', `${image} is a PNG`);
  }
});
