import { readFileSync } from 'node:fs';

/** Just enough of libpcap's file format (Ethernet link type) to check what crossed the wire. */
export interface VxlanFrame {
  outerSrc: string;
  outerDst: string;
  outerTtl: number;
  outerDf: boolean;
  udpSrcPort: number;
  udpDstPort: number;
  udpChecksum: number;
  vxlanFlags: number;
  vni: number;
  innerSrcMac: string;
  innerDstMac: string;
  innerSrc: string;
  innerDst: string;
  innerTtl: number;
  innerProto: number;
}

const mac = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
const ip4 = (b: Buffer) => [...b].join('.');

export function readPcapFrames(file: string): Buffer[] {
  const buf = readFileSync(file);
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const frames: Buffer[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const caplen = u32(off + 8);
    frames.push(buf.subarray(off + 16, off + 16 + caplen));
    off += 16 + caplen;
  }
  return frames;
}

export function parseVxlan(frame: Buffer): VxlanFrame | undefined {
  if (frame.length < 14 + 20 + 8 + 8 + 14 + 20 || frame.readUInt16BE(12) !== 0x0800) return undefined;
  const ip = frame.subarray(14);
  const ihl = (ip[0] & 0x0f) * 4;
  if (ip[9] !== 17) return undefined;
  const udp = ip.subarray(ihl);
  const vx = udp.subarray(8);
  const ieth = vx.subarray(8);
  const iip = ieth.subarray(14);
  return {
    outerSrc: ip4(ip.subarray(12, 16)),
    outerDst: ip4(ip.subarray(16, 20)),
    outerTtl: ip[8],
    outerDf: (ip.readUInt16BE(6) & 0x4000) !== 0,
    udpSrcPort: udp.readUInt16BE(0),
    udpDstPort: udp.readUInt16BE(2),
    udpChecksum: udp.readUInt16BE(6),
    vxlanFlags: vx[0],
    vni: vx.readUInt32BE(4) >>> 8,
    innerDstMac: mac(ieth.subarray(0, 6)),
    innerSrcMac: mac(ieth.subarray(6, 12)),
    innerSrc: ip4(iip.subarray(12, 16)),
    innerDst: ip4(iip.subarray(16, 20)),
    innerTtl: iip[8],
    innerProto: iip[9],
  };
}
