import { readAttachState } from '../dataplane/attach.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { parseArgs } from './args.js';

/** `twill maps`: every pinned map decoded (subnets as CIDRs, MACs as MACs), no etcd needed. */
export async function mapsCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, {
    'pin-dir': { type: 'string', default: '/sys/fs/bpf/twill', describe: 'pin directory of the node' },
    json: { type: 'boolean', default: false, describe: 'machine-readable output' },
  });
  const maps = DatapathMaps.open(o['pin-dir']);
  try {
    const config = maps.readConfig();
    const subnetLen = config?.subnet_len ?? 0;
    const subnets = [...maps.readSubnets()].map(([s, r]) => ({ subnet: `${s}/${subnetLen}`, publicIp: r.public_ip, vtepMac: r.vtep_mac }));
    const peers = [...maps.readPeers()].map(([ip, p]) => ({ publicIp: ip, subnet: `${p.subnet}/${p.subnet_len}`, vtepMac: p.vtep_mac }));
    const stats = Object.fromEntries(Object.entries(maps.stats()).map(([k, v]) => [k, Number(v)]));
    const attach = readAttachState(o['pin-dir']);
    const doc = { pinDir: o['pin-dir'], config, attach: attach && { encap: attach.encap, decap: attach.decap }, subnets, peers, stats };
    if (o.json) {
      console.log(JSON.stringify(doc, null, 2));
      return 0;
    }
    console.log(`pin dir   ${doc.pinDir}`);
    if (config)
      console.log(
        `node      ${config.public_ip}  vtep ${config.vtep_mac}  subnet ${config.subnet}/${config.subnet_len}  network ${config.network}/${config.network_len}  vni ${config.vni}  port ${config.vxlan_port}`,
      );
    if (attach) console.log(`attached  encap ${attach.encap.mode} on ${attach.encap.iface}, decap ${attach.decap.mode} on ${attach.decap.iface}`);
    console.log(`subnets (${subnets.length})`);
    for (const s of subnets) console.log(`  ${s.subnet.padEnd(20)} -> ${s.publicIp.padEnd(16)} ${s.vtepMac}`);
    console.log(`peers (${peers.length})`);
    for (const p of peers) console.log(`  ${p.publicIp.padEnd(16)} ${p.subnet.padEnd(20)} ${p.vtepMac}`);
    console.log('counters');
    for (const [k, v] of Object.entries(stats)) if (v !== 0 || !k.startsWith('drop_')) console.log(`  ${k.padEnd(22)} ${v}`);
    return 0;
  } finally {
    maps.close();
  }
}
