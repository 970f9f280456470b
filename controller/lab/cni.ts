import { chmodSync, copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { installCniPlugin } from '../cni/install.js';
import { run } from '../util/exec.js';
import { labHasIpv4, labHasIpv6 } from './addressing.js';
import { LabError } from './errors.js';
import { flannelCniPlugin } from './peers.js';
import { labStateDir, type LabNode, type LabPod, type LabState } from './state.js';

/*
 * Pods are added the way kubelet does with flannel's conflist: through the `flannel` plugin
 * (twill's compatible one, installed in the lab's own plugin directory, or flannel's own on a
 * flanneld node), which reads the node's subnet file and delegates to the real bridge and
 * host-local plugins.
 */

/** Debian's containernetworking-plugins: bridge, host-local, loopback. */
const CNI_BIN = '/usr/lib/cni';

function cniConf(state: LabState, node: LabNode) {
  return {
    cniVersion: '0.4.0',
    name: 'cbr0',
    type: 'flannel',
    subnetFile: node.subnetFile,
    dataDir: `${labStateDir(state.name)}/${node.name}/cni-flannel`,
    // As in a conflist: the lab has no outside network, so nothing to masquerade (pod addresses stay visible).
    delegate: { hairpinMode: true, isDefaultGateway: true, ipMasq: false }, // as kube-flannel.yml, minus masquerading
    // Per node: host-local keeps its allocations in dataDir, which nodes on one host must not share.
    ipam: { dataDir: `${labStateDir(state.name)}/${node.name}/ipam` },
  };
}

/** Where a node's `flannel` plugin is: twill's, or flannel's own on a flanneld node. */
const cniBinDir = (state: LabState, node: LabNode) => `${labStateDir(state.name)}/${node.dataplane === 'flanneld' ? 'cni-bin-flannel' : 'cni-bin'}`;
const cniPath = (state: LabState, node: LabNode) => `${cniBinDir(state, node)}:${CNI_BIN}`;

/** twill's CNI plugin, where a BPF or kernel node's CNI_PATH finds it; `always` installs it even if it is there. */
export function installTwillCniPlugin(state: Pick<LabState, 'name'>, always = false): void {
  const dir = `${labStateDir(state.name)}/cni-bin`;
  if (always || !existsSync(`${dir}/flannel`)) installCniPlugin(dir, 'flannel');
}

/** flannel's CNI plugin from the build cache, where a flanneld node's CNI_PATH finds it. */
export function installFlannelCniPlugin(state: LabState): void {
  const dir = `${labStateDir(state.name)}/cni-bin-flannel`;
  if (existsSync(`${dir}/flannel`)) return;
  mkdirSync(dir, { recursive: true });
  copyFileSync(flannelCniPlugin().bin, `${dir}/flannel`);
  chmodSync(`${dir}/flannel`, 0o755);
}

/** What the lab hands a node's CNI plugin: the netconf, CNI_PATH and where twill's plugin is (the bench times it). */
export function labCniSetup(state: LabState, node: LabNode): { conf: ReturnType<typeof cniConf>; cniPath: string; plugin: string } {
  return { conf: cniConf(state, node), cniPath: cniPath(state, node), plugin: `${cniBinDir(state, node)}/flannel` };
}

async function cni(state: LabState, command: 'ADD' | 'DEL', plugin: string, conf: object, node: LabNode, pod: LabPod, ifname = 'eth0', args?: string) {
  const dir = plugin === 'flannel' ? cniBinDir(state, node) : CNI_BIN;
  const res = await run([`${dir}/${plugin}`], {
    netns: node.netns,
    input: JSON.stringify(conf),
    allowFailure: true,
    env: {
      PATH: process.env.PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: pod.containerId,
      CNI_NETNS: `/run/netns/${pod.netns}`,
      CNI_IFNAME: ifname,
      CNI_PATH: cniPath(state, node),
      ...(args ? { CNI_ARGS: args } : {}),
    },
  });
  if (res.code !== 0) throw new LabError(`CNI ${command} ${plugin} for pod ${pod.name} on node ${node.name} failed: ${(res.stdout + res.stderr).trim()}`);
  return res.stdout;
}

/** The pod's addresses, IPv4 first, as the plugins returned them; `requestIp` asks host-local for that one. */
export async function cniAdd(state: LabState, node: LabNode, pod: LabPod, requestIp?: string): Promise<string[]> {
  await cni(state, 'ADD', 'loopback', { cniVersion: '0.4.0', name: 'lo', type: 'loopback' }, node, pod, 'lo');
  // host-local takes a wanted address from CNI_ARGS, as a runtime passes a pod's static IP.
  const args = requestIp ? `IgnoreUnknown=1;IP=${requestIp}` : undefined;
  const out = JSON.parse(await cni(state, 'ADD', 'flannel', cniConf(state, node), node, pod, 'eth0', args)) as { ips?: { address: string }[] };
  const addrs = (out.ips ?? []).map((a) => a.address.split('/')[0]).sort((a, b) => Number(a.includes(':')) - Number(b.includes(':')));
  const want = Number(labHasIpv4(state)) + Number(labHasIpv6(state));
  if (addrs.length !== want)
    throw new LabError(
      `CNI ADD for pod ${pod.name} returned ${addrs.length} addresses, expected ${want} (${state.ipFamily ?? 'ipv4'}): ${JSON.stringify(out)}`,
    );
  return addrs;
}

/** CNI DEL through the node's `flannel` plugin, as kubelet removes a pod. */
export const cniDel = (state: LabState, node: LabNode, pod: LabPod) => cni(state, 'DEL', 'flannel', cniConf(state, node), node, pod);
