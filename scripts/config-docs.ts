// Rewrites the configuration table in README.md from the config schemas (`--check` only compares).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderConfigTable } from '@pushline/config';

const BEGIN = '<!-- config-table:begin -->';
const END = '<!-- config-table:end -->';
const readme = join(import.meta.dirname, '..', 'README.md');
const text = readFileSync(readme, 'utf8');
const start = text.indexOf(BEGIN);
const end = text.indexOf(END);
if (start < 0 || end < start) throw new Error(`README.md lacks the ${BEGIN} … ${END} markers`);
const next = `${text.slice(0, start + BEGIN.length)}\n${renderConfigTable()}\n${text.slice(end)}`;
if (process.argv.includes('--check')) {
  if (next !== text) {
    process.stderr.write('README.md configuration table is stale: run `node scripts/config-docs.ts`\n');
    process.exit(1);
  }
} else {
  writeFileSync(readme, next);
}
