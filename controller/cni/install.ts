import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../util/paths.js';

/** Writes an executable plugin `name` into `dir` that runs twill's CNI meta-plugin. */
export function installCniPlugin(dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  writeFileSync(file, `#!/bin/sh\n# twill's flannel-compatible CNI plugin\nexec ${process.execPath} ${path.join(repoRoot(), 'dist/controller/cni/main.js')}\n`);
  chmodSync(file, 0o755);
  return file;
}
