import { probeKernelFeatures } from '../dataplane/feature-probe.js';
import { chooseDataplane, formatProbe } from '../dataplane/dataplane-choice.js';
import { linkShow } from '../netlink/ip.js';
import { parseArgs } from './args.js';
import { probeOpts } from './options.js';

/** `twill probe`: what the running kernel offers twill, and what `auto` would make of it. */
export async function probeCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, probeOpts);
  const iface = o.iface || undefined;
  const underlay = iface ? await linkShow(iface) : undefined;
  if (iface && !underlay) throw new Error(`--iface ${iface}: no such interface in this network namespace`);
  const probe = probeKernelFeatures({ iface });
  const auto = chooseDataplane(probe, { dataplane: 'auto', decapHook: 'auto', fastPath: true, backend: 'vxlan', underlayKind: underlay?.linkinfo?.info_kind });
  if (o.json) {
    console.log(JSON.stringify({ ...probe, auto }, null, 2));
    return 0;
  }
  console.log(`kernel ${probe.kernel}${iface ? ` (underlay ${iface})` : ''}`);
  for (const line of formatProbe(probe)) console.log(`  ${line}`);
  console.log(
    `auto (vxlan backend): ${auto.dataplane === 'kernel' ? 'kernel VXLAN' : `BPF, ${auto.attach} attach, decap in ${auto.decap}, ${auto.fastPath ? 'fast' : 'stack'} path`}`,
  );
  for (const [what, why] of Object.entries(auto.reasons)) console.log(`  ${what.padEnd(9)} ${why}`);
  return 0;
}
