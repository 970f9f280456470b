import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot, runtimeNode } from '../util/paths.js';

/** The second line of every plugin twill writes: how uninstall tells ours from flannel's binary of the same name. */
export const TWILL_PLUGIN_MARKER = "# twill's flannel-compatible CNI plugin";

/** The plugin as the build bundles it (scripts/bundle-cni.mjs): one CommonJS file, loaded per pod ADD and DEL. */
export const cniBundle = () => path.join(repoRoot(), 'dist/controller/cni/twill-cni.cjs');

/**
 * The script a container runtime executes. NODE_OPTIONS and NODE_EXTRA_CA_CERTS come from the
 * runtime's environment, not the pod's: the plugin needs neither (it makes no TLS connection),
 * and a CA bundle named there is read at every Node start-up, before any of twill's code runs
 * (about 50 ms per ADD on the reference machine, docs/cni.md). The delegates are Go programs
 * and do not read them either. NODE_COMPILE_CACHE is the plugin's own choice, never the
 * environment's: with `compileCache` (a directory) Node keeps the bundle's compiled code there
 * and reuses it at the next start-up; without, it compiles the bundle every time.
 */
export function cniPluginScript(nodeBinary: string, bundle: string, compileCache?: string): string {
  const cache = compileCache ? `export NODE_COMPILE_CACHE=${compileCache}\n` : '';
  return `#!/bin/sh\n${TWILL_PLUGIN_MARKER}\nunset NODE_OPTIONS NODE_EXTRA_CA_CERTS NODE_COMPILE_CACHE\n${cache}exec ${nodeBinary} ${bundle}\n`;
}

/**
 * Where the plugin keeps Node's compile cache when it uses one: beside the bundle, in the twill
 * tree it runs from (a checkout's dist/, or a DaemonSet's /opt/twill/<version>), so it goes with
 * that tree and is never shared with another build.
 */
export const cniCompileCacheDir = () => path.join(path.dirname(cniBundle()), '.compile-cache');

/**
 * Whether the installed plugin uses Node's compile cache: the faster of the two in `twill bench`
 * on Node 24 (docs/cni.md: its generated cni-cost block compares the two at the median).
 * A cache directory Node cannot write (a read-only tree) only means no cache.
 */
export const CNI_COMPILE_CACHE = true;

/**
 * Writes an executable plugin `name` into `dir` that runs twill's CNI meta-plugin on this tree's
 * pinned Node (runtimeNode), with or without the compile cache (default: CNI_COMPILE_CACHE).
 */
export function installCniPlugin(dir: string, name: string, o: { compileCache?: boolean } = {}): string {
  const bundle = cniBundle();
  if (!existsSync(bundle)) throw new Error(`${bundle} is missing: build twill first (npm run build)`);
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  writeFileSync(file, cniPluginScript(runtimeNode(), bundle, (o.compileCache ?? CNI_COMPILE_CACHE) ? cniCompileCacheDir() : undefined));
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
