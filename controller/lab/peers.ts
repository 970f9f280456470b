import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../util/paths.js';

/*
 * The real programs twill is tested beside (flanneld, flannel's CNI plugin, Kubernetes' API
 * server, controller manager and kubectl), at the exact releases scripts/peers/versions.env
 * names, built by scripts/peers/build.sh into its cache.
 * Nothing here stands in for them: a missing build is an error naming the module and version.
 */

export interface PeerProgram {
  /** what the cache calls it: flanneld, flannel (the CNI plugin), kube-apiserver, ... */
  name: string;
  module: string;
  version: string;
  /** the executable in the build cache */
  bin: string;
}

export class PeerMissingError extends Error {
  override name = 'PeerMissingError';
}

const cacheDir = () => process.env.TWILL_PEERS_CACHE ?? '/var/cache/twill-peers';

/** Pure: the KEY=value lines of versions.env (comments and blank lines skipped). */
export function parseVersionsFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(\S+)\s*$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

function versions(): Record<string, string> {
  return parseVersionsFile(readFileSync(path.join(repoRoot(), 'scripts/peers/versions.env'), 'utf8'));
}

function program(name: string, module: string, version: string): PeerProgram {
  const bin = path.join(cacheDir(), `${name}-${version}`, name);
  if (!existsSync(bin))
    throw new PeerMissingError(
      `${name} ${version} (module ${module}) is not built in ${path.dirname(bin)}: run scripts/peers/build.sh, which names what the module proxy refused`,
    );
  return { name, module, version, bin };
}

/** flanneld itself, built from github.com/flannel-io/flannel. */
export function flanneld(): PeerProgram {
  const v = versions();
  return program('flanneld', v.FLANNELD_MODULE, v.FLANNELD_VERSION);
}

/** flannel's own mk-docker-opts.sh, as the flanneld module ships it. */
export function mkDockerOpts(): string {
  const bin = path.join(path.dirname(flanneld().bin), 'mk-docker-opts.sh');
  if (!existsSync(bin)) throw new PeerMissingError(`mk-docker-opts.sh is missing beside ${flanneld().bin}: run scripts/peers/build.sh`);
  return bin;
}

/** flannel's CNI plugin (the `flannel` meta-plugin that delegates to bridge + host-local). */
export function flannelCniPlugin(): PeerProgram {
  const v = versions();
  return program('flannel', v.FLANNEL_CNI_MODULE, v.FLANNEL_CNI_VERSION);
}

/** Kubernetes' programs, all from one release of k8s.io/kubernetes (scripts/peers/kubernetes/). */
function kubernetesProgram(name: string): PeerProgram {
  const v = versions();
  return program(name, v.KUBERNETES_MODULE, v.KUBERNETES_VERSION);
}

export const kubeApiserver = (): PeerProgram => kubernetesProgram('kube-apiserver');
export const kubeControllerManager = (): PeerProgram => kubernetesProgram('kube-controller-manager');
export const kubectl = (): PeerProgram => kubernetesProgram('kubectl');
