import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
// zod's tree-shakable API: the CNI plugin bundles this file, and each pod's ADD pays for what it loads.
import * as z from 'zod/mini';
import { parseIpv4 } from '../net/ipv4.js';
import { formatIpv6, parseIpv6 } from '../net/ipv6.js';
import { readStateFile, StateFileError } from '../util/state-file.js';

/*
 * What the CNI plugin records about every pod it adds, for the agent to put the pod on the fast
 * path: its address and MAC, and the host-side veth and bridge the delegate plugin made. One
 * JSON file per (container, interface), written atomically at ADD and removed at DEL, in a
 * directory next to the subnet file both sides already share (/run/flannel/endpoints by
 * default), so it needs no new flag, survives agent restarts and is gone after a reboot, with
 * the pods.
 */

const mac = z.string().check(z.regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'a lower-case MAC address'));
const nonEmpty = (max?: number) => z.string().check(z.minLength(1), ...(max === undefined ? [] : [z.maxLength(max)]));
export const endpointRecordSchema = z
  .object({
    containerId: nonEmpty(),
    ifname: nonEmpty(),
    netns: z.optional(z.string()),
    /** the pod's IPv4 address (none in an IPv6-only network) */
    ip: z.optional(z.string().check(z.refine((s) => parseIpv4(s) !== undefined, 'an IPv4 address'))),
    /** the pod's IPv6 address in a dual-stack or IPv6-only network (records of builds before IPv6 have none) */
    ip6: z.optional(z.string().check(z.refine((s) => parseIpv6(s) !== undefined, 'an IPv6 address'))),
    mac,
    hostVeth: nonEmpty(15),
    bridge: nonEmpty(15),
    addedAt: z.string(),
  })
  .check(z.refine((r) => r.ip !== undefined || r.ip6 !== undefined, { message: 'an IPv4 or an IPv6 address', path: ['ip'] }));
export type EndpointRecord = z.output<typeof endpointRecordSchema>;

export const endpointsDirFor = (subnetFile: string) => path.join(path.dirname(subnetFile), 'endpoints');
/** Where the agent says which pin directory its maps are in, for the plugin's DEL (see forgetEndpoint). */
const pinDirFile = (dir: string) => path.join(dir, 'pin-dir');

export function writePinDirPointer(dir: string, pinDir: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${pinDirFile(dir)}.tmp`, pinDir + '\n');
  renameSync(`${pinDirFile(dir)}.tmp`, pinDirFile(dir));
}

export function readPinDirPointer(dir: string): string | undefined {
  try {
    return readFileSync(pinDirFile(dir), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

export function readEndpointRecord(dir: string, containerId: string, ifname: string): EndpointRecord | undefined {
  try {
    return parseRecordFile(recordFile(dir, containerId, ifname));
  } catch {
    return undefined;
  }
}

/** A record file's contents, or an error that names the file and what is wrong with it. */
const parseRecordFile = (file: string): EndpointRecord => readStateFile('endpoint record', file, endpointRecordSchema);
const recordFile = (dir: string, containerId: string, ifname: string) => path.join(dir, `${containerId}_${ifname}.json`);

const cniResultSchema = z.object({
  interfaces: z._default(z.array(z.object({ name: z.string(), mac: z.optional(z.string()), sandbox: z.optional(z.string()) })), []),
  ips: z._default(z.array(z.object({ address: z.string(), interface: z.optional(z.int()) })), []),
});

/**
 * Pure: the record for a successful ADD, from the delegate's result (the bridge plugin lists the
 * bridge, the host-side veth and the pod's interface, in that order). Undefined when the result
 * does not describe a bridged pod with an address: such a pod simply stays on the stack path.
 */
export function recordFromCniResult(
  result: unknown,
  ctx: { containerId: string; ifname: string; netns?: string; bridge: string; now?: Date },
): EndpointRecord | undefined {
  const parsed = cniResultSchema.safeParse(result);
  if (!parsed.success) return undefined;
  const { interfaces, ips } = parsed.data;
  const v4 = ips.find((i) => parseIpv4(i.address.split('/')[0]) !== undefined && i.interface !== undefined);
  // The pod's interface is the one its first address is on (IPv4, or IPv6 in an IPv6-only network).
  const podIndex = v4?.interface ?? ips.find((i) => i.interface !== undefined && parseIpv6(i.address.split('/')[0]) !== undefined)?.interface;
  if (podIndex === undefined) return undefined;
  const v6 = ips.find((i) => i.interface === podIndex && parseIpv6(i.address.split('/')[0]) !== undefined);
  const pod = interfaces[podIndex];
  const hostVeth = interfaces.find((i) => !i.sandbox && i.name !== ctx.bridge);
  if (!pod?.mac || !pod.sandbox || !hostVeth || !interfaces.some((i) => i.name === ctx.bridge && !i.sandbox)) return undefined;
  const rec = endpointRecordSchema.safeParse({
    containerId: ctx.containerId,
    ifname: ctx.ifname,
    netns: ctx.netns,
    ...(v4 ? { ip: v4.address.split('/')[0] } : {}),
    ...(v6 ? { ip6: formatIpv6(parseIpv6(v6.address.split('/')[0])!) } : {}),
    mac: pod.mac.toLowerCase(),
    hostVeth: hostVeth.name,
    bridge: ctx.bridge,
    addedAt: (ctx.now ?? new Date()).toISOString(),
  });
  return rec.success ? rec.data : undefined;
}

export function writeEndpointRecord(dir: string, rec: EndpointRecord): void {
  mkdirSync(dir, { recursive: true });
  const file = recordFile(dir, rec.containerId, rec.ifname);
  writeFileSync(`${file}.tmp`, JSON.stringify(rec) + '\n');
  renameSync(`${file}.tmp`, file);
}

export function removeEndpointRecord(dir: string, containerId: string, ifname: string): void {
  rmSync(recordFile(dir, containerId, ifname), { force: true });
}

/** Every record in the directory; a file that does not parse is reported (its error names it), not fatal. */
export function readEndpointRecords(dir: string): { records: EndpointRecord[]; invalid: { file: string; error: string }[] } {
  const records: EndpointRecord[] = [];
  const invalid: { file: string; error: string }[] = [];
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return { records, invalid };
  }
  for (const name of names) {
    const file = path.join(dir, name);
    try {
      records.push(parseRecordFile(file));
    } catch (err) {
      // Removed between the listing and the read (a DEL), or not JSON.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        invalid.push({ file, error: err instanceof StateFileError ? err.message : `endpoint record ${file}: ${(err as Error).message}` });
    }
  }
  return { records, invalid };
}
