import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { attachDataplane, detachDataplane, readAttachState } from '../dataplane/attach.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { parseDataplaneSpec } from '../dataplane/spec.js';
import { desiredMaps } from '../reconcile/desired.js';
import { parseArgs, requireOpts, UsageError, type OptTable } from './args.js';

const pinDirOpt = { type: 'string', default: '/sys/fs/bpf/twill', describe: 'pin directory of this node' } as const;

const attachOpts = {
  'pin-dir': pinDirOpt,
  iface: { type: 'string', describe: 'underlay interface (XDP decap, encapsulated packets leave here)' },
  'public-ip': { type: 'string', describe: "this node's PublicIP" },
  'vtep-mac': { type: 'string', describe: "this node's VtepMAC" },
  subnet: { type: 'string', describe: "this node's subnet (CIDR)" },
  network: { type: 'string', describe: 'cluster network (CIDR)' },
  vni: { type: 'number', default: 1, describe: 'VXLAN VNI' },
  port: { type: 'number', default: 8472, describe: 'VXLAN UDP port' },
  mtu: { type: 'number', describe: 'underlay MTU (default: the interface MTU)' },
  'overlay-device': { type: 'string', default: 'twill0', describe: 'name of the overlay device' },
  hold: { type: 'boolean', default: false, describe: 'stay running after attaching, until a signal (as an agent does)' },
} satisfies OptTable;

const leasesSchema = z.array(z.object({ subnet: z.string(), publicIp: z.string(), vtepMac: z.string() }));

/** `twill dataplane attach|detach|sync|state`: the loader, run inside the node's network namespace. */
export async function dataplaneCli(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'attach': {
      const o = parseArgs(rest, attachOpts);
      requireOpts(o, ['iface', 'public-ip', 'vtep-mac', 'subnet', 'network']);
      const spec = parseDataplaneSpec({
        pinDir: o['pin-dir'],
        underlayIface: o.iface,
        publicIp: o['public-ip'],
        vtepMac: o['vtep-mac'],
        subnet: o.subnet,
        network: o.network,
        vni: o.vni,
        port: o.port,
        mtu: o.mtu,
        overlayDevice: o['overlay-device'],
      });
      const res = await attachDataplane(spec);
      console.log(JSON.stringify({ attached: res.state.encap, decap: res.state.decap, swapped: res.swapped }));
      if (o.hold) await waitForSignal();
      return 0;
    }
    case 'detach': {
      const o = parseArgs(rest, { 'pin-dir': pinDirOpt });
      const res = await detachDataplane(o['pin-dir']);
      console.log(res.removed.length ? `removed: ${res.removed.join(', ')}` : 'nothing to remove');
      return 0;
    }
    case 'sync': {
      // Programs peers from a lease list (JSON on stdin or --leases FILE) without etcd.
      const o = parseArgs(rest, { 'pin-dir': pinDirOpt, leases: { type: 'string', default: '-', describe: 'JSON file of leases, - for stdin' } });
      const text = readFileSync(o.leases === '-' ? 0 : o.leases, 'utf8');
      const parsed = leasesSchema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new UsageError(`--leases: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      const state = readAttachState(o['pin-dir']);
      if (!state) throw new UsageError(`--pin-dir ${o['pin-dir']}: no datapath attached there`);
      const maps = DatapathMaps.open(o['pin-dir']);
      try {
        const desired = desiredMaps({ subnet: state.spec.subnet, publicIp: state.spec.publicIp }, parsed.data);
        for (const s of desired.skipped) console.error(`skipped lease ${s.lease.subnet}: ${s.reason}`);
        console.log(JSON.stringify(maps.sync(desired)));
      } finally {
        maps.close();
      }
      return 0;
    }
    default:
      throw new UsageError(`twill dataplane: unknown subcommand ${sub ?? '(none)'}; expected attach, detach or sync`);
  }
}

/** Nothing the datapath needs lives in this process: pins hold links and maps. */
function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    const timer = setInterval(() => undefined, 1 << 30);
    for (const sig of ['SIGTERM', 'SIGINT'] as const)
      process.once(sig, () => {
        clearInterval(timer);
        resolve();
      });
  });
}
