import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

const root = join(import.meta.dirname, '..');

interface Manifest {
  name: string;
  exports?: Record<string, string>;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

const packages = ['libs', 'services'].flatMap((dir) =>
  readdirSync(join(root, dir)).map((name) => {
    const manifest = JSON.parse(readFileSync(join(root, dir, name, 'package.json'), 'utf8')) as Manifest;
    return { dir, path: join(root, dir, name), manifest };
  }),
);

test('every lib and service exposes exactly one public entry, src/index.ts', () => {
  for (const { path, manifest } of packages) {
    assert.deepEqual(manifest.exports, { '.': './src/index.ts' }, `${manifest.name} exports`);
    assert.ok(existsSync(join(path, 'src', 'index.ts')), `${manifest.name} has src/index.ts`);
  }
});

test('libs never depend on services, and packages form no dependency cycle', () => {
  const byName = new Map(packages.map((p) => [p.manifest.name, p]));
  const internalDeps = (name: string, withDev: boolean) => {
    const m = byName.get(name)?.manifest;
    const deps = { ...m?.dependencies, ...(withDev ? m?.devDependencies : {}) };
    return Object.keys(deps).filter((d) => byName.has(d));
  };
  for (const { dir, manifest } of packages) {
    if (dir !== 'libs') continue;
    for (const dep of internalDeps(manifest.name, true)) {
      assert.equal(byName.get(dep)?.dir, 'libs', `${manifest.name} depends on the service ${dep}`);
    }
  }
  const visiting = new Set<string>();
  const done = new Set<string>();
  const visit = (name: string, trail: string[]) => {
    if (done.has(name)) return;
    assert.ok(!visiting.has(name), `dependency cycle: ${[...trail, name].join(' → ')}`);
    visiting.add(name);
    for (const dep of internalDeps(name, false)) visit(dep, [...trail, name]);
    visiting.delete(name);
    done.add(name);
  };
  for (const { manifest } of packages) visit(manifest.name, []);
});

test('the device SDK depends on no server package and takes only types from the protocol', () => {
  // @pushline/client runs in browsers: it must not pull the server libs (or zod, through the
  // protocol's schemas) into the bundle. Its one runtime dependency is socket.io-client.
  const client = packages.find((p) => p.manifest.name === '@pushline/client');
  assert.ok(client, 'libs/client exists');
  assert.deepEqual(Object.keys(client.manifest.dependencies ?? {}), ['socket.io-client']);
  const internalDev = Object.keys(client.manifest.devDependencies ?? {}).filter((d) =>
    d.startsWith('@pushline/'),
  );
  assert.deepEqual(internalDev, ['@pushline/protocol'], 'only the protocol, for its types');
  const sources = readdirSync(join(client.path, 'src')).filter((f) => f.endsWith('.ts'));
  for (const file of sources) {
    const text = readFileSync(join(client.path, 'src', file), 'utf8');
    for (const [statement] of text.matchAll(/^import[^;]*from '(@pushline\/[^']+)';/gm)) {
      assert.match(statement, /^import type /, `${file}: ${statement} must be a type-only import`);
    }
  }
});

test('every service has a main.ts that the platform runs', () => {
  for (const { dir, path, manifest } of packages) {
    if (dir === 'services') assert.ok(existsSync(join(path, 'src', 'main.ts')), `${manifest.name} main.ts`);
  }
});
