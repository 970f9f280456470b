import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout twill runs from, found the same way from dist/ and from the TypeScript sources. */
export function repoRoot(): string {
  return readPackage().dir;
}

/** package.json's version: the one place twill's version is kept. */
export const twillVersion = (): string => readPackage().version;

function readPackage(): { dir: string; version: string } {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    const parsed = existsSync(pkg) ? (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string; version: string }) : undefined;
    if (parsed?.name === 'twill') return { dir, version: parsed.version };
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the twill checkout (package.json named "twill") above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export const bpfObjectDir = () => path.join(repoRoot(), 'bpf/build');
export const cliEntry = () => path.join(repoRoot(), 'dist/controller/cli.js');
/** The executable operators run (systemd, the DaemonSet): it carries the agent's V8 flags. */
export const twillBin = () => path.join(repoRoot(), 'bin/twill');
