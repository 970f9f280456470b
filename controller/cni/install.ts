import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../util/paths.js';

/** The second line of every plugin twill writes: how uninstall tells ours from flannel's binary of the same name. */
export const TWILL_PLUGIN_MARKER = "# twill's flannel-compatible CNI plugin";

/** The plugin as the build bundles it (scripts/bundle-cni.mjs): one CommonJS file, loaded per pod ADD and DEL. */
export const cniBundle = () => path.join(repoRoot(), 'dist/controller/cni/twill-cni.cjs');

/**
 * The script a container runtime executes. NODE_OPTIONS and NODE_EXTRA_CA_CERTS come from the
 * runtime's environment, not the pod's: the plugin needs neither (it makes no TLS connection),
 * and a CA bundle named there is read at every Node start-up, before any of twill's code runs
 * (about 50 ms per ADD on the reference machine, README "CNI"). The delegates are Go programs
 * and do not read them either.
 */
export function cniPluginScript(nodeBinary: string, bundle: string): string {
  return `#!/bin/sh\n${TWILL_PLUGIN_MARKER}\nunset NODE_OPTIONS NODE_EXTRA_CA_CERTS\nexec ${nodeBinary} ${bundle}\n`;
}

/** Writes an executable plugin `name` into `dir` that runs twill's CNI meta-plugin. */
export function installCniPlugin(dir: string, name: string): string {
  const bundle = cniBundle();
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: build twill first (npm run build)`);
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  writeFileSync(file, cniPluginScript(process.execPath, bundle));
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
  // The bundle, or the unbundled entry a plugin written by an earlier build runs.
  const exec = lines.slice(2).find((l) => l.startsWith('exec '));
  const m = /^exec \S+ (\S+)\/dist\/controller\/cni\/(?:twill-cni\.cjs|main\.js)$/.exec(exec ?? '');
  return m ? { root: m[1] } : undefined;
}
