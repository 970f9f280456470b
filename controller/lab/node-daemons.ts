import path from 'node:path';
import { isAgent, isFlanneld, startAgent, startFlanneld, startImageAgent, stopAgent, stopFlanneld, type AgentProcess } from './agents.js';
import { removeImageContainer } from './image.js';
import { kubeFlags } from './kube.js';
import { labDefaults } from './options.js';
import { flanneld } from './peers.js';
import { saveState, type LabNode, type LabState } from './state.js';

/*
 * Each node's daemon as the lab runs it: twill agent (on an image node, the container image's,
 * by podman), or the real flanneld on a flanneld node, with the flags that point it at the lab's
 * etcd and the node's underlay.
 */

const HEALTHZ_PORT = 8471;

/**
 * The flags flanneld and twill agent share (twill takes flanneld's): the lab's etcd, the node's
 * underlay, subnet file and health address, and whether it masquerades.
 */
function flannelFlags(state: LabState, node: LabNode, ipMasq: boolean): string[] {
  const subnets = state.kube
    ? kubeFlags(state)
    : [`--etcd-endpoints=${(state.etcdMembers ?? [state.etcd!]).map((e) => e.endpoint).join(',')}`, `--etcd-prefix=${state.etcd!.prefix}`];
  return [
    ...subnets,
    '--iface=eth0',
    `--subnet-file=${node.subnetFile}`,
    ...(ipMasq ? ['--ip-masq'] : []),
    `--healthz-ip=${node.underlayIp}`,
    `--healthz-port=${HEALTHZ_PORT}`,
  ];
}

/** flanneld masquerades as kube-flannel.yml runs it, unless --ip-masq none. */
const flanneldArgs = (state: LabState, node: LabNode): string[] => flannelFlags(state, node, state.ipMasq !== 'none');

function agentArgs(state: LabState, node: LabNode): string[] {
  return [
    `--dataplane=${node.dataplane}`,
    `--fast-path=${state.fastPath ?? labDefaults.fastPath}`,
    `--decap-hook=${state.decapHook ?? labDefaults.decapHook}`,
    ...flannelFlags(state, node, state.ipMasq === 'all'),
    `--pin-dir=${node.pinDir}`,
    '-v=1',
    // Tests and the bench read these logs line by line.
    '--log-format=json',
  ];
}

/**
 * Starts a node's daemon (twill agent, or flanneld on a flanneld node) with the lab's flags plus
 * any given; tests kill and restart them through restartAgent and stopNodeDaemon. `env` replaces
 * the lab's (tests: the POD_NAME way of finding the Node).
 */
export function startNodeDaemon(state: LabState, node: LabNode, extraArgs: string[] = [], env?: Record<string, string>): AgentProcess {
  const opts = {
    netns: node.netns,
    logFile: node.agent?.log ?? `${path.dirname(node.subnetFile)}/agent.log`,
    healthz: `${node.underlayIp}:${HEALTHZ_PORT}`,
    // Kubernetes mode: the daemon finds its Node by name, as in a DaemonSet with NODE_NAME set.
    env: env ?? (state.kube ? { NODE_NAME: node.name } : undefined),
  };
  if (node.dataplane === 'flanneld') {
    const bin = flanneld();
    node.flanneldVersion = bin.version;
    node.agent = startFlanneld(bin.bin, { ...opts, args: [...flanneldArgs(state, node), ...extraArgs] });
  } else if (node.image) node.agent = startImageAgent(node.image, { ...opts, args: [...agentArgs(state, node), ...extraArgs] });
  else node.agent = startAgent({ ...opts, args: [...agentArgs(state, node), ...extraArgs] });
  saveState(state);
  return node.agent;
}

export const restartAgent = startNodeDaemon;

/** Whether the node's daemon (twill agent or flanneld) still runs. */
export function nodeDaemonRunning(node: LabNode): boolean {
  if (!node.agent) return false;
  return node.dataplane === 'flanneld' ? isFlanneld(node.agent.pid, node.subnetFile) : isAgent(node.agent.pid, node.pinDir);
}

/** Stops the node's daemon; both leave their datapath in place on SIGTERM. */
export async function stopNodeDaemon(node: LabNode, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!node.agent) return;
  if (node.dataplane === 'flanneld') await stopFlanneld(node.agent.pid, node.subnetFile, signal);
  else await stopAgent(node.agent.pid, node.pinDir, signal);
  // podman killed after its grace leaves the container running: it goes by name.
  if (node.image) await removeImageContainer(node);
}
