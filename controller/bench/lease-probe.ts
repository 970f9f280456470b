import { Etcd3 } from 'etcd3';
import { encodeLeaseValue, subnetKey } from '../subnet/lease.js';
import { fakeAttrs, fakeSubnet, timedWrites } from './fake-peers.js';

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

const fakeLease = (i: number) => encodeLeaseValue(fakeAttrs(i));

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
const latency = async (client: Etcd3, prefix: string, pinDir: string, puts: number) =>
  (
    await timedWrites(pinDir, puts, {
      write: (i) =>
        client
          .put(`${prefix}/subnets/${subnetKey(fakeSubnet(i))}`)
          .value(fakeLease(i))
          .exec(),
      undo: (i) =>
        client
          .delete()
          .key(`${prefix}/subnets/${subnetKey(fakeSubnet(i))}`)
          .exec(),
    })
  ).map((t) => t.sentMs);

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
