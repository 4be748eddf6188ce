import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { build } from 'esbuild';

/** A file the console serves, built or read once at start. */
export interface Asset {
  readonly contentType: string;
  readonly body: Buffer;
}

const uiDir = join(import.meta.dirname, '..', 'ui');

/**
 * Bundles the console and the demo page (plain TypeScript; the demo imports @pushline/client)
 * with esbuild, in memory, once at start: no build step before `npm start`, nothing written.
 */
export async function buildUiAssets(): Promise<Map<string, Asset>> {
  const result = await build({
    entryPoints: { console: join(uiDir, 'console.ts'), demo: join(uiDir, 'demo.ts') },
    bundle: true,
    minify: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    write: false,
    outdir: '/ui',
    logLevel: 'silent',
  });
  const assets = new Map<string, Asset>();
  for (const file of result.outputFiles) {
    assets.set(file.path.replace(/^\/ui\//, ''), {
      contentType: 'text/javascript; charset=utf-8',
      body: Buffer.from(file.contents),
    });
  }
  for (const [name, contentType] of [
    ['console.html', 'text/html; charset=utf-8'],
    ['demo.html', 'text/html; charset=utf-8'],
    ['style.css', 'text/css; charset=utf-8'],
  ] as const) {
    assets.set(name, { contentType, body: readFileSync(join(uiDir, name)) });
  }
  return assets;
}
