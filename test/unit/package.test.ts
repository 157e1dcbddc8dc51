/**
 * package.json and package-lock.json against the repository, without building anything:
 *  - the library entry ("exports", "types") and the "bin" target name files under dist/ whose
 *    TypeScript source exists (tsconfig.json: rootDir ".", outDir "dist", so dist/X.js <- X.ts);
 *  - every "scripts" entry that runs a file under scripts/ names a file that exists;
 *  - `npm ci` would accept the lock: its root entry has package.json's dependencies, and every
 *    package the lock installs finds each of its dependencies, optional platform packages too
 *    (a lock written on one platform without them makes `npm ci` fail with "Missing: ... from lock file").
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const readJson = (file: string) => JSON.parse(readFileSync(join(ROOT, file), 'utf8'));

interface LockEntry {
  name?: string;
  version?: string;
  link?: boolean;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
}

const pkg = readJson('package.json');
const lock: { name: string; version: string; lockfileVersion: number; packages: Record<string, LockEntry> } =
  readJson('package-lock.json');

/** ./dist/a/b.js or ./dist/a/b.d.ts -> a/b.ts (the file tsc compiles to it), or null when not under dist/. */
function sourceOf(target: string): string | null {
  const rel = posix.normalize(target.replace(/^\.\//, ''));
  if (!rel.startsWith('dist/')) return null;
  return rel.slice('dist/'.length).replace(/(\.d)?\.(m|c)?js$|\.d\.(m|c)?ts$/, '.ts');
}

/** Every string target in an "exports" value (conditions and subpaths, nested). */
function exportTargets(value: unknown, key = '.'): Array<{ key: string; target: string }> {
  if (typeof value === 'string') return [{ key, target: value }];
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([k, v]) => exportTargets(v, k.startsWith('.') ? k : `${key} [${k}]`));
}

describe('library entry', () => {
  it('"exports" has the root entry with types and default, and ./package.json', () => {
    expect(pkg.exports?.['.']).toEqual({ types: './dist/index.d.ts', default: './dist/index.js' });
    expect(Object.keys(pkg.exports['.'])[0], '"types" must come first: conditions match in order').toBe('types');
    expect(pkg.exports['./package.json']).toBe('./package.json');
    expect(pkg.types).toBe(pkg.exports['.'].types);
  });

  it('every export target under dist/ is compiled from a source file that exists', () => {
    const targets = exportTargets(pkg.exports);
    expect(targets.length).toBeGreaterThan(0);
    for (const { key, target } of targets) {
      expect(target, `exports ${key}`).toMatch(/^\.\//);
      const source = sourceOf(target);
      if (source === null) expect(existsSync(join(ROOT, target)), `exports ${key} -> ${target}`).toBe(true);
      else expect(existsSync(join(ROOT, source)), `exports ${key} -> ${target}: its source ${source}`).toBe(true);
    }
  });

  it('"types" is compiled from a source file that exists', () => {
    const source = sourceOf(pkg.types);
    expect(source, `"types": ${pkg.types} is not under dist/`).not.toBeNull();
    expect(existsSync(join(ROOT, source!)), `"types" -> ${pkg.types}: its source ${source}`).toBe(true);
  });

  it.runIf(existsSync(join(ROOT, 'dist/index.js')))('when built, the package resolves its own name to dist/index.js', () => {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', "console.log(import.meta.resolve('tnet'))"], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(pathToFileURL(join(ROOT, 'dist/index.js')).href);
  });
});

describe('bin and scripts', () => {
  it('every "bin" target is compiled from a source file that exists', () => {
    const bins: Record<string, string> = typeof pkg.bin === 'string' ? { [pkg.name]: pkg.bin } : pkg.bin;
    expect(Object.keys(bins).length).toBeGreaterThan(0);
    for (const [name, target] of Object.entries(bins)) {
      const source = sourceOf(target);
      expect(source, `bin ${name}: ${target} is not under dist/`).not.toBeNull();
      expect(existsSync(join(ROOT, source!)), `bin ${name} -> ${target}: its source ${source}`).toBe(true);
    }
  });

  it('every "scripts" entry that names a file under scripts/ names a file that exists', () => {
    let named = 0;
    for (const [name, command] of Object.entries(pkg.scripts as Record<string, string>)) {
      for (const m of command.matchAll(/(?:^|[\s"'=])(?:\.\/)?(scripts\/[\w.\/-]+)/g)) {
        named++;
        expect(existsSync(join(ROOT, m[1]!)), `script "${name}" runs ${m[1]}`).toBe(true);
      }
    }
    expect(named).toBeGreaterThan(0);
  });
});

describe('package-lock.json is what npm ci expects', () => {
  it('is a v3 lock for this package', () => {
    expect(lock.lockfileVersion).toBe(3);
    expect(lock.name).toBe(pkg.name);
    expect(lock.version).toBe(pkg.version);
  });

  it('its root entry has the dependencies and devDependencies of package.json', () => {
    const root = lock.packages[''];
    expect(root, 'packages[""]').toBeDefined();
    for (const field of ['dependencies', 'devDependencies', 'optionalDependencies', 'peerDependencies'] as const) {
      expect(root![field] ?? {}, field).toEqual(pkg[field] ?? {});
    }
  });

  /** Where Node (and npm) find `name` from the package at `from`: its own node_modules, then each parent's. */
  function resolveInLock(from: string, name: string): LockEntry | undefined {
    for (let dir = from; ; dir = parentOf(dir)) {
      const hit = lock.packages[dir === '' ? `node_modules/${name}` : `${dir}/node_modules/${name}`];
      if (hit) return hit;
      if (dir === '') return undefined;
    }
  }
  /** node_modules/a/node_modules/@s/b -> node_modules/a; node_modules/a -> '' (the root). */
  function parentOf(location: string): string {
    const i = location.lastIndexOf('/node_modules/');
    return i < 0 ? '' : location.slice(0, i);
  }

  it('every package it installs finds its dependencies, optional and platform-specific ones included', () => {
    const missing: string[] = [];
    for (const [location, entry] of Object.entries(lock.packages)) {
      if (entry.link) continue;
      const required = {
        ...entry.dependencies,
        ...entry.optionalDependencies,
        ...Object.fromEntries(
          Object.entries(entry.peerDependencies ?? {}).filter(([n]) => !entry.peerDependenciesMeta?.[n]?.optional),
        ),
        ...(location === '' ? entry.devDependencies : {}),
      };
      for (const name of Object.keys(required)) {
        if (!resolveInLock(location, name)) missing.push(`${name} (wanted by ${location || 'the root'})`);
      }
    }
    expect(missing, 'npm ci would stop with "Missing: ... from lock file"').toEqual([]);
  });

  it('every installed package has a version and an integrity hash', () => {
    const bad = Object.entries(lock.packages)
      .filter(([location, e]) => location !== '' && !e.link)
      .filter(([, e]) => !e.version || !(e as { integrity?: string }).integrity)
      .map(([location]) => location);
    expect(bad).toEqual([]);
  });
});
