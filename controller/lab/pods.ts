import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { ip } from '../netlink/ip.js';
import { labHasIpv6 } from './addressing.js';
import { isAgent } from './agents.js';
import { cniAdd, cniDel, installFlannelCniPlugin, installTwillCniPlugin } from './cni.js';
import { LabError } from './errors.js';
import { namespaceExists } from './namespaces.js';
import { saveState, type LabNode, type LabPod, type LabState } from './state.js';

/*
 * A lab's pods: a namespace each, wired by the CNI plugins as kubelet would, and on a BPF node
 * waited for until the agent has seen the change, so that what follows may count on it.
 */

/**
 * Adds a pod to a node through the CNI plugins, as kubelet would; `ip` asks host-local for that
 * address (a pod re-created with its old address). On a BPF node whose agent runs it returns once
 * the agent has the pod in its endpoints map, so what follows may count on the fast path.
 */
export async function addLabPod(state: LabState, nodeName: string, opts: { name?: string; ip?: string } = {}): Promise<LabPod> {
  const node = state.nodes.find((n) => n.name === nodeName);
  if (!node) throw new LabError(`no node ${nodeName} in lab ${state.name}`);
  installTwillCniPlugin(state);
  if (node.dataplane === 'flanneld') installFlannelCniPlugin(state);
  let name = opts.name;
  for (let k = 1; !name; k++)
    if (!state.pods.some((p) => p.name === `${node.name}-p${k}`) && !(await namespaceExists(`${node.netns}-p${k}`))) name = `${node.name}-p${k}`;
  if (state.pods.some((p) => p.name === name)) throw new LabError(`pod ${name} exists in lab ${state.name}`);
  const suffix = name.slice(node.name.length + 1);
  const pod: LabPod = { name, netns: `${node.netns}-${suffix}`, ip: '', node: node.name, containerId: `${state.name}-${name}` };
  await ip(['netns', 'add', pod.netns]);
  state.pods.push(pod);
  saveState(state);
  pod.ips = await cniAdd(state, node, pod, opts.ip);
  pod.ip = pod.ips.find((a) => !a.includes(':')) ?? pod.ips[0];
  saveState(state);
  // IPv6 addresses are tentative until duplicate address detection is done (a second or so): the
  // pod's, and its gateway's on the node's bridge. Until then the pod reaches nothing over IPv6.
  if (labHasIpv6(state)) for (const ns of [pod.netns, node.netns]) await waitUntilNotTentative(ns);
  // Until the agent has put the pod in its endpoints map (twill_endpoints6 for an IPv6-only pod).
  if (agentRuns(node)) await waitForEndpoint(node, pod.ip, true);
  return pod;
}

/** Deletes a pod as kubelet would (CNI DEL, then its namespace); on a BPF node, until the agent forgot it. */
export async function removeLabPod(state: LabState, podName: string): Promise<void> {
  const pod = state.pods.find((p) => p.name === podName);
  if (!pod) throw new LabError(`no pod ${podName} in lab ${state.name}`);
  const node = state.nodes.find((n) => n.name === pod.node)!;
  await cniDel(state, node, pod);
  await ip(['netns', 'del', pod.netns]);
  state.pods = state.pods.filter((p) => p !== pod);
  saveState(state);
  if (agentRuns(node)) await waitForEndpoint(node, pod.ip, false);
}

/** A BPF node whose agent runs: the one kind of node whose endpoints map can be waited on. */
const agentRuns = (node: LabNode) => node.dataplane === 'bpf' && node.agent !== undefined && isAgent(node.agent.pid, node.pinDir);

async function waitUntilNotTentative(netns: string, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ;) {
    const tentative = (JSON.parse(await ip(['-6', '-j', 'addr', 'show', 'tentative'], { netns })) as { addr_info?: unknown[] }[]).some(
      (l) => (l.addr_info ?? []).length > 0,
    );
    if (!tentative) return;
    if (Date.now() > deadline) throw new LabError(`netns ${netns}: IPv6 addresses still tentative after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Until the node's endpoints map has (or no longer has) `ip`. */
async function waitForEndpoint(node: LabNode, podIp: string, present: boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const maps = DatapathMaps.open(node.pinDir);
    let has: boolean;
    try {
      has = maps.familyOf(podIp)?.readEndpoints().has(podIp) ?? false;
    } finally {
      maps.close();
    }
    if (has === present) return;
    if (Date.now() > deadline)
      throw new LabError(
        `node ${node.name}: pod ${podIp} ${present ? 'never appeared in' : 'never left'} its endpoints map in ${timeoutMs / 1000} s; agent log ${node.agent?.log}`,
      );
    await new Promise((r) => setTimeout(r, 20));
  }
}
