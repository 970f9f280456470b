import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as z from 'zod/mini';
import { formatCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { checkSubnetFile, parseSubnetFile } from '../subnet/subnet-file.js';
import {
  endpointsDirFor,
  readEndpointRecord,
  readPinDirPointer,
  recordFromCniResult,
  removeEndpointRecord,
  writeEndpointRecord,
} from '../endpoints/records.js';
import { readStateFile } from '../util/state-file.js';

/*
 * A CNI meta-plugin that behaves like flannel's: it reads the subnet file written by the
 * agent, builds the delegate config (bridge + host-local over FLANNEL_SUBNET with a route to
 * FLANNEL_NETWORK, MTU FLANNEL_MTU, ipMasq = !FLANNEL_IPMASQ), saves it per container so DEL
 * works even after the subnet file changed, and runs the delegate. Installable under the name
 * `flannel`, so existing conflists keep working.
 */

interface CniNetConf {
  cniVersion?: string;
  name: string;
  type: string;
  subnetFile?: string;
  dataDir?: string;
  delegate?: Record<string, unknown>;
  ipam?: Record<string, unknown>;
}

/** What ADD saved for DEL and CHECK: the delegate's config, which must at least name its plugin. */
const savedDelegateSchema = z.looseObject({ type: z.string().check(z.minLength(1)) });

class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }
  toJSON() {
    return { cniVersion: '0.4.0', code: this.code, msg: this.message, details: this.details };
  }
}

/**
 * Pure: flannel's delegate config for a netconf and a subnet file's contents. With IPv6 the
 * file has FLANNEL_IPV6_SUBNET and FLANNEL_IPV6_NETWORK too (or only those): host-local gets a
 * range per family, IPv4 first, and a route to each family's network, as flannel's plugin does
 * (flannel-io/cni-plugin flannel_linux.go getDelegateIPAM; what is required: flannel.go missing()).
 */
export function delegateConfig(conf: CniNetConf, subnetFileText: string): Record<string, unknown> {
  const env = parseSubnetFile(subnetFileText);
  const missing = [
    ...(env.network || env.ipv6Network ? [] : ['FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK']),
    ...(env.subnet || env.ipv6Subnet ? [] : ['FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET']),
    ...(env.mtu === undefined ? ['FLANNEL_MTU'] : []),
    ...(env.ipMasq === undefined ? ['FLANNEL_IPMASQ'] : []),
  ];
  if (missing.length) throw new CniError(7, `subnet file is incomplete: it has no ${missing.join(', ')}`);
  const d: Record<string, unknown> = { ...(conf.delegate ?? {}) };
  d.name = conf.name;
  d.type ??= 'bridge';
  d.ipMasq ??= !env.ipMasq;
  d.mtu ??= env.mtu;
  if (d.type === 'bridge') d.isGateway ??= true;
  if (conf.cniVersion) d.cniVersion = conf.cniVersion;
  const ipam: Record<string, unknown> = { ...(conf.ipam ?? {}) };
  ipam.type ??= 'host-local';
  // The networks of FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET (host bits cleared), as flannel's plugin passes them.
  ipam.ranges = [...(env.subnet ? [[{ subnet: formatCidr(env.subnet) }]] : []), ...(env.ipv6Subnet ? [[{ subnet: formatCidr6(env.ipv6Subnet) }]] : [])];
  ipam.routes = [
    ...((ipam.routes as unknown[]) ?? []),
    ...(env.network ? [{ dst: formatCidr(env.network) }] : []),
    ...(env.ipv6Network ? [{ dst: formatCidr6(env.ipv6Network) }] : []),
  ];
  d.ipam = ipam;
  return d;
}

function runDelegate(type: string, conf: Record<string, unknown>, env: NodeJS.ProcessEnv): { code: number; stdout: string; stderr: string } {
  const dirs = (env.CNI_PATH ?? '').split(':').filter(Boolean);
  const bin = dirs.map((d) => path.join(d, type)).find((p) => existsSync(p));
  if (!bin) throw new CniError(7, `delegate plugin ${type} not found in CNI_PATH ${env.CNI_PATH ?? '(unset)'}`);
  const res = spawnSync(bin, [], { input: JSON.stringify(conf), env, encoding: 'utf8' });
  return { code: res.status ?? 1, stdout: res.stdout, stderr: res.stderr };
}

/*
 * The fast path's bookkeeping never fails a pod: without a record the agent still finds the pod
 * by scanning the bridge, or leaves its traffic on the stack path.
 */
function recordEndpoint(subnetFile: string, delegate: Record<string, unknown>, stdout: string, env: NodeJS.ProcessEnv): void {
  if (delegate.type !== 'bridge') return;
  try {
    const bridge = typeof delegate.bridge === 'string' ? delegate.bridge : 'cni0';
    const rec = recordFromCniResult(JSON.parse(stdout), { containerId: env.CNI_CONTAINERID!, ifname: env.CNI_IFNAME ?? 'eth0', netns: env.CNI_NETNS, bridge });
    if (rec) writeEndpointRecord(endpointsDirFor(subnetFile), rec);
  } catch {
    // see above
  }
}

/**
 * Before the delegate deletes the veth: the pod's entry leaves the fast path's map here, not only
 * when the agent next syncs, so that while the agent is down a new pod given the same address is
 * not sent to the dead veth (without an entry its traffic takes the stack path until the agent
 * adds it). libbpf is loaded only on this path.
 */
async function forgetEndpoint(subnetFile: string, env: NodeJS.ProcessEnv): Promise<void> {
  const dir = endpointsDirFor(subnetFile);
  const ifname = env.CNI_IFNAME ?? 'eth0';
  try {
    const rec = readEndpointRecord(dir, env.CNI_CONTAINERID!, ifname);
    const pinDir = readPinDirPointer(dir);
    if (rec && pinDir) (await import('../endpoints/forget.js')).forgetEndpointEntry(pinDir, rec.ip, rec.ip6);
  } catch {
    // see recordEndpoint: the agent's next sync removes it
  }
  try {
    removeEndpointRecord(dir, env.CNI_CONTAINERID!, ifname);
  } catch {
    // see recordEndpoint
  }
}

/** Runs one CNI command; returns what to print on stdout and the exit code. */
export async function cniMain(stdin: string, env: NodeJS.ProcessEnv): Promise<{ out: string; code: number }> {
  const command = env.CNI_COMMAND;
  try {
    if (command === 'VERSION') return { out: JSON.stringify({ cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] }), code: 0 };
    let conf: CniNetConf;
    try {
      conf = JSON.parse(stdin) as CniNetConf;
    } catch (err) {
      throw new CniError(6, `network config is not JSON: ${(err as Error).message}`);
    }
    if (!conf.name) throw new CniError(7, 'network config has no name');
    const containerId = env.CNI_CONTAINERID;
    if (!containerId || /[/\\]/.test(containerId)) throw new CniError(4, `CNI_CONTAINERID ${JSON.stringify(containerId)} is missing or not a plain id`);
    const dataDir = conf.dataDir ?? '/var/lib/cni/flannel';
    const saved = path.join(dataDir, containerId);
    const subnetFile = conf.subnetFile ?? '/run/flannel/subnet.env';
    if (command === 'ADD') {
      let text: string;
      try {
        text = readFileSync(subnetFile, 'utf8');
      } catch (err) {
        throw new CniError(11, `cannot read subnet file ${subnetFile} (is the agent running?): ${(err as NodeJS.ErrnoException).code}`);
      }
      const { problems } = checkSubnetFile(text);
      if (problems.length) throw new CniError(7, `subnet file ${subnetFile}: ${problems.join('; ')}`);
      const delegate = delegateConfig(conf, text);
      mkdirSync(dataDir, { recursive: true });
      writeFileSync(`${saved}.tmp`, JSON.stringify(delegate));
      renameSync(`${saved}.tmp`, saved);
      const res = runDelegate(String(delegate.type), delegate, env);
      if (res.code !== 0) {
        rmSync(saved, { force: true });
        return { out: res.stdout || JSON.stringify(new CniError(7, `delegate ${String(delegate.type)} failed`, res.stderr)), code: res.code };
      }
      recordEndpoint(subnetFile, delegate, res.stdout, env);
      return { out: res.stdout, code: 0 };
    }
    if (command === 'DEL' || command === 'CHECK') {
      if (command === 'DEL') await forgetEndpoint(subnetFile, env);
      if (!existsSync(saved)) return { out: '', code: 0 }; // DEL is idempotent; nothing was added
      const delegate = readStateFile('saved delegate config', saved, savedDelegateSchema);
      const res = runDelegate(delegate.type, delegate, env);
      if (res.code !== 0) return { out: res.stdout, code: res.code };
      if (command === 'DEL') rmSync(saved, { force: true });
      return { out: res.stdout, code: 0 };
    }
    throw new CniError(4, `unsupported CNI_COMMAND ${JSON.stringify(command)}`);
  } catch (err) {
    const e = err instanceof CniError ? err : new CniError(999, (err as Error).message);
    return { out: JSON.stringify(e), code: 1 };
  }
}
