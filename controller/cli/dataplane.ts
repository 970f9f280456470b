import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { attachDataplane, detachDataplane } from '../dataplane/attach.js';
import { readAttachState } from '../dataplane/attach-state.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { parseDataplaneSpec } from '../dataplane/spec.js';
import { desiredMaps } from '../reconcile/desired.js';
import { parseArgs, requireOpts, UsageError } from './args.js';
import { attachOpts, detachOpts, syncOpts } from './options.js';

const leasesSchema = z.array(z.object({ subnet: z.string(), publicIp: z.string(), vtepMac: z.string() }));

/** `twill dataplane attach|detach|sync|state`: the loader, run inside the node's network namespace. */
export async function dataplaneCli(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'attach': {
      const o = parseArgs(rest, attachOpts);
      requireOpts(o, attachOpts);
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
      const res = await attachDataplane({ spec });
      console.log(JSON.stringify({ attached: res.state.encap, decap: res.state.decap, swapped: res.swapped }));
      if (o.hold) await waitForSignal();
      return 0;
    }
    case 'detach': {
      const o = parseArgs(rest, detachOpts);
      const res = await detachDataplane(o['pin-dir']);
      console.log(res.removed.length ? `removed: ${res.removed.join(', ')}` : 'nothing to remove');
      return 0;
    }
    case 'sync': {
      // Programs peers from a lease list (JSON on stdin or --leases FILE) without etcd.
      const o = parseArgs(rest, syncOpts);
      const text = readFileSync(o.leases === '-' ? 0 : o.leases, 'utf8');
      const parsed = leasesSchema.safeParse(JSON.parse(text));
      if (!parsed.success) throw new UsageError(`--leases: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      const state = readAttachState(o['pin-dir']);
      if (!state) throw new UsageError(`--pin-dir ${o['pin-dir']}: no datapath attached there`);
      const { subnet, publicIp } = state.spec;
      if (!subnet || !publicIp) throw new UsageError(`--pin-dir ${o['pin-dir']}: the datapath there is IPv6-only, and sync programs IPv4 leases`);
      const maps = DatapathMaps.open(o['pin-dir']);
      try {
        const desired = desiredMaps({ subnet, publicIp }, parsed.data);
        for (const s of desired.skipped) console.error(`skipped lease ${s.lease.subnet}: ${s.reason}`);
        console.log(JSON.stringify(maps.ipv4.sync(desired)));
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
