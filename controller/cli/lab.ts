import { labDown, labStatus, labUp, LabError, type LabHooks, type LabNode, type LabState } from '../lab/lab.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { desiredMaps } from '../reconcile/desired.js';
import { run } from '../util/exec.js';
import { cliEntry } from '../util/paths.js';
import { parseArgs, UsageError, type OptTable } from './args.js';
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

const nameOpt = { name: { type: 'string', default: 'twl', describe: 'lab name (namespaces are <name>-...)' } } satisfies OptTable;
const upOpts = {
  ...nameOpt,
  nodes: { type: 'number', default: 3, describe: 'number of nodes' },
  'pods-per-node': { type: 'number', default: 2, describe: 'pods per node' },
  network: { type: 'string', default: '10.244.0.0/16', describe: 'cluster network' },
  'subnet-len': { type: 'number', default: 24, describe: 'node subnet length' },
  underlay: { type: 'string', default: '192.168.77.0/24', describe: 'underlay network (/24)' },
} satisfies OptTable;

export async function labCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const progress = (msg: string) => console.error(msg);
  try {
    switch (sub) {
      case 'up': {
        const o = parseArgs(rest, upOpts);
        const started = Date.now();
        const state = await labUp(
          { name: o.name, nodes: o.nodes, podsPerNode: o['pods-per-node'], network: o.network, subnetLen: o['subnet-len'], underlayCidr: o.underlay },
          dataplaneLabHooks,
          progress,
        );
        console.error(`lab ${state.name} up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${state.nodes.length} nodes, ${state.pods.length} pods, twill on every node`);
        console.error(`next: twill lab demo --name ${state.name} | twill lab status --name ${state.name} | twill lab down --name ${state.name}`);
        return 0;
      }
      case 'down': {
        const o = parseArgs(rest, nameOpt);
        await labDown(o.name, dataplaneLabHooks, progress);
        return 0;
      }
      case 'status': {
        const o = parseArgs(rest, { ...nameOpt, json: { type: 'boolean', default: false, describe: 'JSON output' } });
        const state = await labStatus(o.name);
        if (!state) throw new UsageError(`--name ${o.name}: no such lab`);
        printStatus(state, o.json);
        return 0;
      }
      case 'demo': {
        const o = parseArgs(rest, nameOpt);
        const state = await labStatus(o.name);
        if (!state) throw new UsageError(`--name ${o.name}: no such lab; run \`twill lab up --nodes 3\` first`);
        return runDemo(state);
      }
      default:
        throw new UsageError(`twill lab: unknown subcommand ${sub ?? '(none)'}; expected up, down, status or demo`);
    }
  } catch (err) {
    if (err instanceof LabError) throw new UsageError(err.message);
    throw err;
  }
}

function printStatus(state: LabState, json: boolean): void {
  if (json) {
    const doc = {
      name: state.name,
      network: state.network,
      underlay: state.underlay,
      nodes: state.nodes.map(({ name, netns, underlayIp, subnet, vtepMac, pinDir, iface }) => ({ name, netns, underlayIp, subnet, vtepMac, pinDir, iface })),
      pods: state.pods.map(({ name, netns, ip, node }) => ({ name, netns, ip, node })),
      podMtu: state.podMtu,
      subnetLen: state.subnetLen,
    };
    console.log(JSON.stringify(doc, null, 2));
    return;
  }
  console.log(`lab ${state.name}: network ${state.network}, underlay ${state.underlay.cidr} on ${state.underlay.bridge} in ${state.underlay.netns}`);
  console.log('nodes');
  for (const n of state.nodes) console.log(`  ${n.name.padEnd(4)} ${n.netns.padEnd(10)} ${n.underlayIp.padEnd(15)} ${n.subnet.padEnd(16)} vtep ${n.vtepMac}  ${n.pinDir}`);
  console.log('pods');
  for (const p of state.pods) console.log(`  ${p.name.padEnd(7)} ${p.netns.padEnd(13)} ${p.ip.padEnd(15)} on ${p.node}`);
}
