import { Etcd3 } from 'etcd3';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { formatIpv4, parseIpv4 } from '../net/ipv4.js';
import { encodeLeaseValue, subnetKey } from '../subnet/lease.js';

/*
 * The etcd side of the control-plane benchmark. It runs inside the lab's etcd namespace (the
 * only place that reaches etcd) and opens the node's maps by their pins, so one process puts a
 * lease and watches the map: both ends of the latency are on one clock.
 *
 *   node lease-probe.js fill   '{"endpoint","prefix","count"}'          -> {"put": N}
 *   node lease-probe.js latency '{"endpoint","prefix","pinDir","puts"}' -> {"ms": [..]}
 */

interface ProbeArgs {
  endpoint: string;
  prefix: string;
  count?: number;
  pinDir?: string;
  puts?: number;
}

// Fake peers: /24s from 10.128.0.0/9 (the lab's nodes lease from the low half), PublicIPs from
// 100.64.0.0/10 and locally administered MACs, all derived from the index so reruns agree.
const fakeSubnet = (i: number) => ({ ip: parseIpv4('10.128.0.0')! + i * 256, len: 24 });
const fakeLease = (i: number) =>
  encodeLeaseValue({
    backendType: 'vxlan',
    publicIp: formatIpv4(parseIpv4('100.64.0.0')! + i + 1),
    vni: 1,
    vtepMac: `02:bb:${[24, 16, 8, 0].map((s) => ((i >>> s) & 0xff).toString(16).padStart(2, '0')).join(':')}`,
  });

async function fill(client: Etcd3, prefix: string, count: number): Promise<number> {
  // etcd's default --max-txn-ops is 128: 100 puts per transaction, a few transactions in flight.
  const batches: number[][] = [];
  for (let i = 0; i < count; i += 100) batches.push(Array.from({ length: Math.min(100, count - i) }, (_, k) => i + k));
  for (let b = 0; b < batches.length; b += 8) {
    await Promise.all(
      batches.slice(b, b + 8).map((idx) =>
        client
          .if(`${prefix}/subnets/${subnetKey(fakeSubnet(idx[0]))}`, 'Version', '!=', -1)
          .then(...idx.map((i) => client.put(`${prefix}/subnets/${subnetKey(fakeSubnet(i))}`).value(fakeLease(i))))
          .commit(),
      ),
    );
  }
  return count;
}

/** Puts one new lease at a time and times until the node's subnets map holds it. */
async function latency(client: Etcd3, prefix: string, pinDir: string, puts: number): Promise<number[]> {
  const maps = DatapathMaps.open(pinDir);
  const out: number[] = [];
  try {
    for (let n = 0; n < puts; n++) {
      const i = 20_000 + n; // clear of the filled range, still inside 10.128.0.0/9
      const subnet = fakeSubnet(i);
      const t0 = process.hrtime.bigint();
      await client.put(`${prefix}/subnets/${subnetKey(subnet)}`).value(fakeLease(i));
      for (;;) {
        if (maps.ipv4.readSubnet(formatIpv4(subnet.ip))) break;
        if (Number(process.hrtime.bigint() - t0) > 10e9) throw new Error(`lease ${subnetKey(subnet)} not in ${pinDir}/twill_subnets after 10 s`);
        await new Promise((r) => setTimeout(r, 1));
      }
      out.push(Number(process.hrtime.bigint() - t0) / 1e6);
      await client.delete().key(`${prefix}/subnets/${subnetKey(subnet)}`);
    }
  } finally {
    maps.close();
  }
  return out;
}

async function main(): Promise<void> {
  const [mode, json] = process.argv.slice(2);
  const a = JSON.parse(json) as ProbeArgs;
  const client = new Etcd3({ hosts: a.endpoint });
  try {
    if (mode === 'fill') console.log(JSON.stringify({ put: await fill(client, a.prefix, a.count!) }));
    else if (mode === 'latency') console.log(JSON.stringify({ ms: await latency(client, a.prefix, a.pinDir!, a.puts!) }));
    else throw new Error(`lease-probe: unknown mode ${mode}`);
  } finally {
    client.close();
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
