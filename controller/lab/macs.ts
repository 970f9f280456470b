import { existsSync } from 'node:fs';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { ip } from '../netlink/ip.js';
import type { LabNode, LabState } from './state.js';

/*
 * A node's MACs read back for the lab's state (tests compare them with the leases): its underlay
 * eth0's once made, its VtepMACs once its daemon is ready, from wherever its datapath keeps them.
 */

/** The MAC of a device in the node's namespace: eth0, or a kernel or flanneld node's vxlan device. */
export async function deviceMac(node: LabNode, device: string): Promise<string> {
  return (JSON.parse(await ip(['-j', 'link', 'show', device], { netns: node.netns })) as { address: string }[])[0].address;
}

/** From the pinned config map of a BPF node, or the vxlan device of a kernel one; none for host-gw, whose leases carry no VTEP. */
export async function readVtepMac(node: LabNode, backend: LabState['backend'] = 'vxlan'): Promise<string> {
  if (backend === 'host-gw') return '';
  if (existsSync(`${node.pinDir}/twill_config`)) {
    const maps = DatapathMaps.open(node.pinDir);
    try {
      return maps.readConfig()?.vtep_mac ?? '';
    } finally {
      maps.close();
    }
  }
  return deviceMac(node, 'flannel.1');
}

/** From the pinned IPv6 config map of a BPF node, or the flannel-v6.1 device of a kernel one; none for host-gw. */
export async function readVtepMac6(node: LabNode, backend: LabState['backend'] = 'vxlan'): Promise<string> {
  if (backend === 'host-gw') return '';
  if (existsSync(`${node.pinDir}/twill_config6`)) return DatapathMaps.readPinnedMac6(node.pinDir) ?? '';
  return deviceMac(node, 'flannel-v6.1');
}
