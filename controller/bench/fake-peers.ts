import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { formatIpv4, parseIpv4 } from '../net/ipv4.js';
import type { LeaseAttrs } from '../subnet/lease.js';

/*
 * The control-plane benches' fake peers, the same in etcd and in Kubernetes mode: /24s from
 * 10.128.0.0/9 (the labs' own nodes get theirs from the low half), PublicIPs from 100.64.0.0/10
 * and locally administered MACs, all derived from the index so reruns agree.
 */

export const fakeSubnet = (i: number) => ({ ip: parseIpv4('10.128.0.0')! + i * 256, len: 24 });

export const fakeAttrs = (i: number): LeaseAttrs => ({
  backendType: 'vxlan',
  publicIp: formatIpv4(parseIpv4('100.64.0.0')! + i + 1),
  vni: 1,
  vtepMac: `02:bb:${[24, 16, 8, 0].map((s) => ((i >>> s) & 0xff).toString(16).padStart(2, '0')).join(':')}`,
});

/** Single writes are timed with indices from here: clear of any filled range, still inside 10.128.0.0/9. */
const TIMED_BASE = 20_000;

/** A single write the benches time: made, then undone (`prepare`: untimed, before it). */
export interface TimedWrite {
  prepare?(i: number): Promise<unknown>;
  write(i: number): Promise<unknown>;
  undo(i: number): Promise<unknown>;
}

/** One timed write: from sending it, and from its answer, until the map held it (ms). */
export interface WriteTime {
  sentMs: number;
  answeredMs: number;
}

/**
 * `count` writes of fake peers from TIMED_BASE on, one at a time, each timed until the node's
 * subnets map (opened by its pins, on this process's clock) holds its subnet.
 */
export async function timedWrites(pinDir: string, count: number, w: TimedWrite): Promise<WriteTime[]> {
  const maps = DatapathMaps.open(pinDir);
  const out: WriteTime[] = [];
  const since = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;
  try {
    for (let n = 0; n < count; n++) {
      const i = TIMED_BASE + n;
      const base = formatIpv4(fakeSubnet(i).ip);
      await w.prepare?.(i);
      const t0 = process.hrtime.bigint();
      await w.write(i);
      const answered = process.hrtime.bigint();
      for (;;) {
        if (maps.ipv4.readSubnet(base)) break;
        if (since(t0) > 10e3) throw new Error(`${base}/24 not in ${pinDir}/twill_subnets 10 s after its write`);
        await new Promise((r) => setTimeout(r, 1));
      }
      out.push({ sentMs: since(t0), answeredMs: since(answered) });
      await w.undo(i);
    }
  } finally {
    maps.close();
  }
  return out;
}
