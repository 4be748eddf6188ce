// The browser bundle size of @pushline/client as the README reports it:
//   node scripts/sdk-size.ts           prints the line
//   node scripts/sdk-size.ts --write   rewrites it in README.md (a test keeps the two in step)
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = join(import.meta.dirname, '..');
const BEGIN = '<!-- sdk-size:begin -->';
const END = '<!-- sdk-size:end -->';

/** esbuild, minified ESM for browsers, socket.io-client included. */
export async function sdkSizeLine(): Promise<string> {
  const result = await build({
    entryPoints: [join(root, 'libs', 'client', 'src', 'index.ts')],
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    logLevel: 'silent',
  });
  const bytes = result.outputFiles[0]?.contents ?? new Uint8Array();
  const kb = (n: number) => (n / 1024).toFixed(1);
  return `\`@pushline/client\` bundled for browsers (esbuild, minified, socket.io-client included): **${kb(bytes.length)} KB, ${kb(gzipSync(bytes, { level: 9 }).length)} KB gzipped**.`;
}

export function readmeSizeLine(readme: string): string {
  return readme.slice(readme.indexOf(BEGIN) + BEGIN.length, readme.indexOf(END)).trim();
}

if (import.meta.main) {
  const line = await sdkSizeLine();
  if (process.argv.includes('--write')) {
    const file = join(root, 'README.md');
    const readme = readFileSync(file, 'utf8');
    const start = readme.indexOf(BEGIN);
    const end = readme.indexOf(END);
    if (start < 0 || end < 0) throw new Error(`README.md has no ${BEGIN} … ${END} block`);
    writeFileSync(file, `${readme.slice(0, start + BEGIN.length)}\n${line}\n${readme.slice(end)}`);
  }
  process.stdout.write(`${line}\n`);
}
