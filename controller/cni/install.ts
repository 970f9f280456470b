import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../util/paths.js';

/** The second line of every plugin twill writes: how uninstall tells ours from flannel's binary of the same name. */
export const TWILL_PLUGIN_MARKER = "# twill's flannel-compatible CNI plugin";

/** Writes an executable plugin `name` into `dir` that runs twill's CNI meta-plugin. */
export function installCniPlugin(dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${TWILL_PLUGIN_MARKER}\nexec ${process.execPath} ${path.join(repoRoot(), 'dist/controller/cni/main.js')}\n`);
  chmodSync(file, 0o755);
  return file;
}

/**
 * Pure: whether a plugin file is one installCniPlugin wrote, and which twill tree it runs
 * (`root`, the directory holding dist/); anything else (flannel's own binary) is not ours.
 */
export function twillPluginTarget(text: string): { root: string } | undefined {
  const lines = text.split('\n');
  if (lines[0] !== '#!/bin/sh' || lines[1] !== TWILL_PLUGIN_MARKER) return undefined;
  const m = /^exec \S+ (\S+)\/dist\/controller\/cni\/main\.js$/.exec(lines[2] ?? '');
  return m ? { root: m[1] } : undefined;
}
