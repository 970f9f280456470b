import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const read = (p: string) => readFileSync(new URL(`../../${p}`, import.meta.url), 'utf8');
const readme = read('README.md');
// From its heading (under *Set-up*) to the next heading of any level.
const prerequisites = readme.slice(readme.indexOf('### Prerequisites'), readme.indexOf('\n#', readme.indexOf('### Prerequisites')));
const pkg = JSON.parse(read('package.json')) as { engines: { node: string }; license: string };

// The set-up facts in the README are read from the files they describe, so neither can change alone.
describe("the README's prerequisites", () => {
  it("names the pinned Node set-up installs and package.json's engines floor, and asks for no Node beforehand", () => {
    const floor = /^>=(\d+\.\d+)$/.exec(pkg.engines.node)?.[1];
    expect(floor).toBeDefined();
    expect(prerequisites).toContain(`**Node.js ${floor} or later**`);
    const pinned = /^NODE_VERSION=(\S+)$/m.exec(read('scripts/runtime/versions.env'))![1];
    expect(prerequisites).toContain(`twill runs on **Node.js ${pinned}**`);
    expect(prerequisites).toContain('**Node.js: none beforehand.**');
    expect(prerequisites).not.toMatch(/installed beforehand|does not install Node/);
  });

  it('lists exactly the Debian packages scripts/setup.sh installs', () => {
    const list = /packages=\(([^)]*)\)/.exec(read('scripts/setup.sh'))![1].split(/\s+/).filter(Boolean);
    const listed = /the\s+Debian packages ([^(]*)\(only the missing ones\)/
      .exec(prerequisites)![1]
      .replace(/\band\b/g, ',')
      .split(/[\s,]+/)
      .filter(Boolean);
    expect(listed.sort()).toEqual([...list].sort());
    expect(read('scripts/setup.sh')).toContain('etcd-server package starts a system etcd');
  });

  it('has a LICENSE matching package.json, and the texts of the BPF code SPDX license', () => {
    expect(pkg.license).toBe('Apache-2.0');
    expect(read('LICENSE')).toMatch(/Apache License\s+Version 2\.0, January 2004/);
    const spdx = new Set(
      readdirSync(new URL('../../bpf', import.meta.url))
        .filter((f) => f.endsWith('.c'))
        .map((f) => /SPDX-License-Identifier: (.*)/.exec(read(`bpf/${f}`))?.[1]),
    );
    expect([...spdx]).toEqual(['(GPL-2.0-only OR BSD-2-Clause)']);
    expect(prerequisites).toContain('`GPL-2.0-only OR BSD-2-Clause`');
    expect(read('LICENSES/GPL-2.0-only.txt')).toMatch(/GNU GENERAL PUBLIC LICENSE\s+Version 2, June 1991/);
    expect(read('LICENSES/BSD-2-Clause.txt')).toMatch(/^BSD 2-Clause License/);
  });
});
