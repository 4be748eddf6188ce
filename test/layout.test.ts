import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
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

/** Every `.ts` file under `dir`, recursively (none when it does not exist). */
function tsFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(dir, f));
}

/** The `@pushline/*` packages a file imports or re-exports, and whether only its types. */
function pushlineImports(text: string): { name: string; typeOnly: boolean }[] {
  const found: { name: string; typeOnly: boolean }[] = [];
  const statements = /^(?:import|export)\s+(type\s+)?[^;]*?from\s+'(@pushline\/[^'/]+)[^']*';/gms;
  for (const m of text.matchAll(statements))
    found.push({ name: m[2] as string, typeOnly: m[1] !== undefined });
  for (const m of text.matchAll(/\bimport\(\s*'(@pushline\/[^'/]+)[^']*'\s*\)/g))
    found.push({ name: m[1] as string, typeOnly: false });
  return found;
}

test('imports follow the package.json dependencies: libs never import services, and no package imports one it does not list', () => {
  // The direction CONTRIBUTING.md draws: a package's src imports (at run time) only the packages
  // its `dependencies` list, its tests also its `devDependencies`, and a type-only import may name
  // a devDependency (erased before it runs, as @pushline/client does with the protocol).
  const dirOf = new Map(packages.map((p) => [p.manifest.name, p.dir]));
  const problems: string[] = [];
  for (const { dir, path, manifest } of packages) {
    const deps = new Set(Object.keys(manifest.dependencies ?? {}));
    const devDeps = new Set(Object.keys(manifest.devDependencies ?? {}));
    for (const [kind, files] of [
      ['src', tsFiles(join(path, 'src'))],
      ['test', tsFiles(join(path, 'test'))],
    ] as const) {
      for (const file of files) {
        for (const { name, typeOnly } of pushlineImports(readFileSync(file, 'utf8'))) {
          const where = `${relative(root, file)} imports ${name}`;
          if (name === manifest.name) continue;
          if (dir === 'libs' && dirOf.get(name) === 'services')
            problems.push(`${where}: a lib imports a service`);
          const listed = kind === 'src' && !typeOnly ? deps.has(name) : deps.has(name) || devDeps.has(name);
          if (!listed)
            problems.push(
              `${where}, which ${manifest.name}'s package.json does not list in its ${kind === 'src' && !typeOnly ? 'dependencies' : 'dependencies or devDependencies'}`,
            );
        }
      }
    }
  }
  assert.deepEqual(problems, []);
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
