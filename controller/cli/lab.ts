import { labCli } from '../lab/cli.js';
import { labStatus, type LabHooks, type LabNode, type LabState } from '../lab/lab.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { desiredMaps } from '../reconcile/desired.js';
import { run } from '../util/exec.js';
import { cliEntry } from '../util/paths.js';
import { parseArgs, UsageError } from './args.js';
import { runDemo } from './lab-demo.js';

/** Runs twill's own CLI inside a node's namespace (the loader must see the node's ifindexes). */
export function twillInNetns(netns: string, args: string[]) {
  return run([process.execPath, cliEntry(), ...args], { netns });
}

/**
 * Until the etcd agent runs in the lab, the lab is the source of leases: each node gets
 * twill's datapath and the lease of every other node, through the same desired-state and
 * map-writer code the agent uses.
 */
export const dataplaneLabHooks: LabHooks = {
  async nodeReady(node: LabNode, state: LabState) {
    await twillInNetns(node.netns, [
      'dataplane', 'attach',
      '--pin-dir', node.pinDir,
      '--iface', node.iface,
      '--public-ip', node.underlayIp,
      '--vtep-mac', node.vtepMac,
      '--subnet', node.subnet,
      '--network', state.network,
      '--mtu', String(state.podMtu + 50),
    ]);
    syncLabPeers(node, state);
  },
  async nodeRemoving(node: LabNode) {
    await twillInNetns(node.netns, ['dataplane', 'detach', '--pin-dir', node.pinDir]);
  },
};

export function syncLabPeers(node: LabNode, state: LabState) {
  const leases = state.nodes.map((n) => ({ subnet: n.subnet, publicIp: n.underlayIp, vtepMac: n.vtepMac }));
  const maps = DatapathMaps.open(node.pinDir);
  try {
    return maps.sync(desiredMaps({ subnet: node.subnet, publicIp: node.underlayIp }, leases));
  } finally {
    maps.close();
  }
}

export async function labCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'demo') {
    const o = parseArgs(argv.slice(1), { name: { type: 'string', default: 'twl', describe: 'lab name' } });
    const state = await labStatus(o.name);
    if (!state) throw new UsageError(`--name ${o.name}: no such lab; run \`twill lab up --nodes 3\` first`);
    return runDemo(state);
  }
  return labCli(argv, dataplaneLabHooks);
}
