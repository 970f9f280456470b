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
/** The executable operators run (systemd, the DaemonSet): it carries the agent's V8 flags and runs on runtimeNode(). */
export const twillBin = () => path.join(repoRoot(), 'bin/twill');

/**
 * The Node.js binary this tree of twill runs on, as bin/twill finds it: the pinned runtime
 * scripts/setup.sh installs (.runtime/node, a link to the pinned version), else the image's and
 * its host copy's node/bin/node, else (a tree with neither) the node running this code. What twill
 * starts to run itself (the CNI plugin script, a detach in a lab namespace) uses it, never the
 * machine's `node`.
 */
export function runtimeNode(root: string = repoRoot()): string {
  for (const candidate of [path.join(root, '.runtime/node/bin/node'), path.join(root, 'node/bin/node')]) {
    if (existsSync(candidate)) return candidate;
  }
  return process.execPath;
}
