import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import { formatCidr, hostAddress, parseCidr, type Cidr } from '../net/ipv4.js';

/** flannel's subnet.env, which the flannel CNI plugin and Docker users read. */
export interface SubnetFile {
  network: Cidr;
  subnet: Cidr;
  mtu: number;
  ipMasq: boolean;
}

export function formatSubnetFile(f: SubnetFile): string {
  // FLANNEL_SUBNET is the first usable address with the prefix length, as flannel writes it.
  return (
    `FLANNEL_NETWORK=${formatCidr(f.network)}\n` +
    `FLANNEL_SUBNET=${hostAddress(f.subnet, 1)}/${f.subnet.len}\n` +
    `FLANNEL_MTU=${f.mtu}\n` +
    `FLANNEL_IPMASQ=${f.ipMasq}\n`
  );
}

export function parseSubnetFile(text: string): Partial<SubnetFile> {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) vars.set(m[1], m[2].trim());
  }
  const out: Partial<SubnetFile> = {};
  const net = vars.get('FLANNEL_NETWORK') && parseCidr(vars.get('FLANNEL_NETWORK')!);
  if (net) out.network = net;
  const sub = vars.get('FLANNEL_SUBNET') && parseCidr(vars.get('FLANNEL_SUBNET')!);
  if (sub) out.subnet = sub;
  if (vars.has('FLANNEL_MTU') && /^\d+$/.test(vars.get('FLANNEL_MTU')!)) out.mtu = Number(vars.get('FLANNEL_MTU'));
  if (vars.has('FLANNEL_IPMASQ')) out.ipMasq = vars.get('FLANNEL_IPMASQ') === 'true';
  return out;
}

/** The previous subnet, if a readable subnet file names one: flannel's second choice at start. */
export function readSubnetHint(file: string): Cidr | undefined {
  try {
    return parseSubnetFile(readFileSync(file, 'utf8')).subnet;
  } catch {
    return undefined;
  }
}

/** Readers never see a half-written file: temp file in the same directory, fsync, rename. */
export function writeSubnetFile(file: string, f: SubnetFile): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', 0o644);
  try {
    writeSync(fd, formatSubnetFile(f));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
