import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Backend } from '../config/choices.js';
import { BpfLink, BpfMap, mapTypeName } from '../bpf/libbpf.js';
import { readAttachState, type AttachState, type FastPathState } from '../dataplane/attach-state.js';
import { formatProbe, type DataplaneChoice, type FeatureProbe } from '../dataplane/dataplane-choice.js';
import { readChoiceRecord } from '../dataplane/choice-record.js';
import { listPodLinks, type PodLink } from '../dataplane/pod-links.js';
import { pinPaths } from '../dataplane/spec.js';
import { formatCidr } from '../net/ipv4.js';
import { formatCidr6 } from '../net/ipv6.js';
import { checkSubnetFile } from '../subnet/subnet-file.js';
import { CONFIG_FAST_PATH, isDeprecatedCounter, type TwillConfig } from '../../maps/layout.js';
import { parseArgs } from './args.js';
import { statusOpts } from './options.js';
import { formatNodeLine, formatPathLine, formatTrafficLine, readMapsDoc, type MapsDoc, type PeerTrafficDoc, type TrafficCounters } from './maps.js';

const LINK_TYPES: Record<number, string> = { 6: 'xdp', 11: 'tcx', 13: 'netkit' };

interface PinnedObject {
  path: string;
  kind: 'map' | 'link' | 'unknown';
  detail: string;
}

interface SubnetFileDoc {
  path: string;
  network?: string;
  subnet?: string;
  /** FLANNEL_IPV6_NETWORK, when the network enables IPv6 */
  ipv6Network?: string;
  /** FLANNEL_IPV6_SUBNET's network: our IPv6 lease */
  ipv6Subnet?: string;
  mtu?: number;
  ipMasq?: boolean;
  /** variables whose value cannot be used, each with why (they are left out above) */
  unusable?: string[];
  /** the file could not be read */
  error?: string;
}

interface HealthDoc {
  address: string;
  live?: boolean;
  ready?: boolean;
  detail?: Record<string, unknown>;
  error?: string;
}

/** How pod traffic goes through this node, hook by hook. */
interface FastPathDoc extends FastPathState {
  /** the path each hook gives pod traffic, in words */
  hooks: { send: string; receive: string; tunnel?: string };
  endpoints: NonNullable<MapsDoc['endpoints']>;
  podLinks: PodLink[];
  send: Record<string, number>;
  receive: Record<string, number>;
  /** FORWARD rules the fast path would bypass, as the agent last saw them (from its /readyz; absent without it) */
  forwardRules?: string[];
}

export interface StatusDoc {
  pinDir: string;
  /** false: nothing pinned under pinDir (a kernel VXLAN node, or a wrong --pin-dir) */
  bpf: boolean;
  node?: MapsDoc['config'];
  /** subnet6: our IPv6 lease, when the network enables IPv6 */
  lease: { subnet?: string; subnet6?: string; expiresAt?: string };
  subnetFile: SubnetFileDoc;
  attach?: Pick<AttachState, 'encap' | 'decap' | 'deliver' | 'tunnel' | 'attachedAt' | 'layoutVersion'>;
  /** absent on a node whose datapath an older build attached */
  fastPath?: FastPathDoc;
  /** the network config's backend, as the datapath was attached for it (absent before backends, and on kernel nodes) */
  backend?: Backend;
  /** route: as in `twill maps` (vxlan, or direct to the PublicIP) */
  peers: (MapsDoc['peers'][number] & Partial<PeerTrafficDoc> & { route?: MapsDoc['subnets'][number]['route'] })[];
  totals: TrafficCounters;
  drops: Record<string, number>;
  pinned: PinnedObject[];
  health?: HealthDoc;
  /** the kernel's capabilities as the agent probed them at start (`twill probe` probes anew) */
  probe?: FeatureProbe;
  /** what the agent picked from them and why; attach, decap and fastPath above say what held */
  dataplaneChoice?: DataplaneChoice;
  /** what does not add up; empty on a healthy node */
  problems: string[];
}

/** Every pin under the node's directory (maps and links), with what the kernel says each is. */
function listPinned(dir: string): PinnedObject[] {
  const out: PinnedObject[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) {
      out.push(...listPinned(p));
      continue;
    }
    out.push(describePin(p));
  }
  return out;
}

function describePin(p: string): PinnedObject {
  try {
    const m = BpfMap.fromPin(p);
    try {
      const i = m.info();
      return { path: p, kind: 'map', detail: `${mapTypeName(i.type) ?? `type ${i.type}`}, key ${i.keySize} B, value ${i.valueSize} B, max ${i.maxEntries}` };
    } finally {
      m.close();
    }
  } catch {
    // not a map: try a link
  }
  try {
    const l = BpfLink.fromPin(p);
    try {
      const i = l.info();
      return {
        path: p,
        kind: 'link',
        detail: `${LINK_TYPES[i.type] ?? `type ${i.type}`}, prog ${i.progId}${i.ifindex !== undefined ? `, ifindex ${i.ifindex}` : ''}`,
      };
    } finally {
      l.close();
    }
  } catch (err) {
    return { path: p, kind: 'unknown', detail: (err as Error).message };
  }
}

function readSubnetFileDoc(file: string): SubnetFileDoc {
  try {
    const { file: f, problems } = checkSubnetFile(readFileSync(file, 'utf8'));
    return {
      path: file,
      network: f.network && formatCidr(f.network),
      subnet: f.subnet && formatCidr(f.subnet), // the lease, as FLANNEL_SUBNET's first host address is masked off
      ipv6Network: f.ipv6Network && formatCidr6(f.ipv6Network),
      ipv6Subnet: f.ipv6Subnet && formatCidr6(f.ipv6Subnet),
      mtu: f.mtu,
      ipMasq: f.ipMasq,
      unusable: problems.length ? problems : undefined,
    };
  } catch (err) {
    return { path: file, error: (err as Error).message };
  }
}

async function readHealth(address: string): Promise<HealthDoc> {
  const get = (p: string) => fetch(`http://${address}${p}`, { signal: AbortSignal.timeout(2000) });
  try {
    const live = (await get('/healthz')).ok;
    const readyz = await get('/readyz');
    const detail = (await readyz.json()) as Record<string, unknown>;
    return { address, live, ready: readyz.ok, detail };
  } catch (err) {
    return { address, error: (err as Error).message };
  }
}

/** Pure: cross-checks what the node's files and maps say. */
export function findProblems(doc: Omit<StatusDoc, 'problems'>, linksPinned: { encap: boolean; decap: boolean }): string[] {
  const problems: string[] = [];
  // The agent's healthz, or without it the kernel record it wrote at start, says kernel VXLAN on purpose.
  const kernelMode = doc.health?.detail?.mode === 'kernel' || (!doc.health && doc.dataplaneChoice?.dataplane === 'kernel');
  if (!doc.bpf) {
    if (!kernelMode) problems.push(`no BPF datapath is pinned under ${doc.pinDir} (a kernel VXLAN node, or a wrong --pin-dir)`);
  } else if (!doc.node) problems.push('twill_config is empty: the datapath was never configured');
  if (doc.bpf && !doc.attach) problems.push('no attach state: the programs may not be attached');
  else if (doc.attach) {
    if (doc.attach.decap.mode === 'xdp-link' && !linksPinned.decap) problems.push('decap link is not pinned');
    if (doc.attach.encap.mode === 'tcx' && !linksPinned.encap) problems.push('encap link is not pinned');
  }
  if (doc.subnetFile.error) problems.push(`subnet file: ${doc.subnetFile.error}`);
  else if (doc.lease.subnet && doc.subnetFile.subnet !== doc.lease.subnet)
    problems.push(`subnet file says ${doc.subnetFile.subnet ?? 'nothing'}, the datapath holds ${doc.lease.subnet}`);
  if (doc.subnetFile.unusable) problems.push(`subnet file ${doc.subnetFile.path}: ${doc.subnetFile.unusable.join('; ')}`);
  const fp = doc.fastPath;
  if (fp) {
    if (fp.requested && !fp.enabled) problems.push(`fast path off: ${fp.reason}`);
    else if (fp.forwardRules?.length)
      problems.push(`FORWARD has ${fp.forwardRules.length} rule(s) the fast path bypasses (--fast-path true): ${fp.forwardRules.join('; ')}`);
    const linked = new Set(fp.podLinks.filter((l) => l.ifindex !== 0).map((l) => l.ifindex));
    if (fp.enabled)
      for (const e of fp.endpoints)
        if (!linked.has(e.ifindex))
          problems.push(`pod ${e.ip} (veth ifindex ${e.ifindex}) has no send program: what it sends to remote pods takes the stack path`);
    for (const l of fp.podLinks) if (l.ifindex === 0) problems.push(`pod link ${l.ifname} is pinned but its veth is gone (the agent's next sync removes it)`);
  }
  if (doc.attach?.tunnel && !doc.attach.tunnel.up)
    problems.push(`${doc.attach.tunnel.iface} is down (${doc.attach.tunnel.reason ?? 'unknown reason'}): fragmented VXLAN is dropped and tc decap gets no GRO`);
  for (const p of doc.peers) if (p.statsSlot === 0) problems.push(`peer ${p.publicIp} has no counter slot (written by an older build, or slots exhausted)`);
  if (doc.health?.error) problems.push(`healthz ${doc.health.address}: ${doc.health.error}`);
  else if (doc.health && !doc.health.ready) problems.push(`agent not ready: ${JSON.stringify(doc.health.detail)}`);
  else if (typeof doc.health?.detail?.configError === 'string') problems.push(`network config: ${doc.health.detail.configError}`);
  return problems;
}

/** What a node without pins shows: no entries, no counters. */
const noMaps = (pinDir: string): MapsDoc => ({
  pinDir,
  subnets: [],
  peers: [],
  nextHops: [],
  stats: { encap_packets: 0, encap_bytes: 0, decap_packets: 0, decap_bytes: 0 },
  traffic: [],
  unattributed: { encap_packets: 0, encap_bytes: 0, decap_packets: 0, decap_bytes: 0 },
});

/**
 * Without pins (a kernel VXLAN node) the subnet file and healthz still tell something; with
 * neither pins nor a subnet file there is nothing to report, and that is an error.
 */
async function readStatus(opts: { pinDir: string; subnetFile: string; healthz?: string }): Promise<StatusDoc> {
  const bpf = existsSync(`${opts.pinDir}/twill_config`);
  const subnetFile = readSubnetFileDoc(opts.subnetFile);
  if (!bpf && subnetFile.error && !opts.healthz) readMapsDoc(opts.pinDir); // throws, naming the pin dir
  const maps = bpf ? readMapsDoc(opts.pinDir) : noMaps(opts.pinDir);
  const traffic = new Map(maps.traffic.map((t) => [t.publicIp, t]));
  const routeOf = new Map(maps.subnets.map((s) => [s.subnet, s.route]));
  const attach = bpf ? readAttachState(opts.pinDir) : undefined;
  const pinned = bpf ? listPinned(opts.pinDir) : [];
  const links = pinPaths(opts.pinDir);
  const health = opts.healthz ? await readHealth(opts.healthz) : undefined;
  const kernel = readChoiceRecord(opts.pinDir);
  const { encap_packets, encap_bytes, decap_packets, decap_bytes, ...rest } = maps.stats;
  const doc: Omit<StatusDoc, 'problems'> = {
    pinDir: opts.pinDir,
    bpf,
    node: maps.config,
    lease: {
      subnet: maps.config ? `${maps.config.subnet}/${maps.config.subnet_len}` : subnetFile.subnet,
      subnet6: typeof health?.detail?.lease6 === 'string' ? health.detail.lease6 : subnetFile.ipv6Subnet,
      expiresAt: typeof health?.detail?.leaseExpiresAt === 'string' ? health.detail.leaseExpiresAt : undefined,
    },
    subnetFile,
    attach: attach && {
      encap: attach.encap,
      decap: attach.decap,
      deliver: attach.deliver,
      tunnel: attach.tunnel,
      attachedAt: attach.attachedAt,
      layoutVersion: attach.layoutVersion,
    },
    fastPath: attach?.fastPath &&
      maps.path && {
        ...fastPathNow(attach.fastPath, maps.config, health?.detail?.fastPath as { reason?: unknown; forwardRules?: unknown } | undefined),
        hooks: describeHooks(attach),
        endpoints: maps.endpoints ?? [],
        podLinks: listPodLinks(opts.pinDir),
        ...maps.path,
      },
    backend: attach?.spec.backend,
    peers: maps.peers.map((p) => ({ ...traffic.get(p.publicIp), ...p, route: routeOf.get(p.subnet) })),
    totals: { encap_packets, encap_bytes, decap_packets, decap_bytes },
    drops: Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== 0)),
    pinned,
    health,
    probe: kernel?.probe,
    dataplaneChoice: kernel?.choice,
  };
  const has = (p: string) => pinned.some((o) => o.path === p);
  return { ...doc, problems: findProblems(doc, { encap: has(links.encapLink), decap: has(links.decapLink) }) };
}

/**
 * Pure: the fast path as it runs now. Attached on, it may since have been held off by the agent
 * (--fast-path auto, FORWARD rules it would bypass): twill_config's bit says, the agent says why.
 */
function fastPathNow(
  attached: FastPathState,
  config: TwillConfig | undefined,
  agent: { reason?: unknown; forwardRules?: unknown } | undefined,
): FastPathState & { forwardRules?: string[] } {
  const forwardRules = Array.isArray(agent?.forwardRules) ? (agent.forwardRules as string[]) : undefined;
  const held = attached.enabled && config !== undefined && (config.flags & CONFIG_FAST_PATH) === 0;
  const reason = typeof agent?.reason === 'string' ? agent.reason : 'held off by the agent';
  return { ...attached, ...(held && { enabled: false, reason }), ...(forwardRules && { forwardRules }) };
}

/** Pure: which path pod traffic takes at each hook, from what is attached. */
function describeHooks(a: AttachState): FastPathDoc['hooks'] {
  const fast = a.fastPath?.enabled;
  const overlay = `${a.encap.iface} (${a.spec.backend === 'host-gw' ? 'routed to the peer' : 'encap'} at tc egress)`;
  const decap = a.decap.hook === 'xdp' ? `XDP decap on ${a.decap.iface} (ahead of GRO)` : `tc decap on ${a.decap.iface} (after GRO)`;
  return {
    send: fast
      ? `fast path at the pod veths (tc ingress): to remote pods, ${a.spec.backend === 'host-gw' ? 'routed to the peer' : 'encapsulated there (or routed to a peer on our segment)'} and sent out of ${a.spec.underlayIface}; everything else, and the node's own traffic, through the stack to ${overlay}`
      : `stack path: the node routes pod traffic to ${overlay}`,
    receive: fast
      ? `${decap}, then straight into local pods (tc ingress of ${a.decap.iface}, bpf_redirect_peer) unless conntrack knows the flow; the rest routed by the stack`
      : `${decap}, then routed by the stack to the pod`,
    tunnel:
      a.tunnel &&
      `${a.tunnel.iface} ${a.tunnel.up ? 'up' : 'down'}: UDP-tunnel GRO on the VXLAN port; reassembled fragments decapped there, checked by twill_tunnel_rx, routed by the stack`,
  };
}

function printStatus(s: StatusDoc): void {
  console.log(`node       ${s.node ? formatNodeLine(s.node) : s.bpf ? '(not configured)' : `(no BPF datapath under ${s.pinDir})`}`);
  if (s.backend) console.log(`backend    ${s.backend}`);
  if (s.dataplaneChoice) {
    console.log(`dataplane  ${s.dataplaneChoice.dataplane} (requested ${s.dataplaneChoice.requested}): ${s.dataplaneChoice.reasons.dataplane}`);
    if (s.dataplaneChoice.reasons.attach) console.log(`tc attach  ${s.dataplaneChoice.attach}: ${s.dataplaneChoice.reasons.attach}`);
  }
  if (s.probe)
    console.log(
      `kernel     ${s.probe.kernel}, probed ${s.probe.probedAt}\n${formatProbe(s.probe)
        .map((l) => `  ${l}`)
        .join('\n')}`,
    );
  console.log(`lease      ${s.lease.subnet ?? '?'}${s.lease.subnet6 ? ` ${s.lease.subnet6}` : ''}${s.lease.expiresAt ? `  expires ${s.lease.expiresAt}` : ''}`);
  const f = s.subnetFile;
  const v6 = f.ipv6Subnet ? ` ipv6 network ${f.ipv6Network} subnet ${f.ipv6Subnet}` : '';
  console.log(`subnet.env ${f.path}: ${f.error ?? `network ${f.network} subnet ${f.subnet}${v6} mtu ${f.mtu} ipmasq ${f.ipMasq}`}`);
  if (s.attach) {
    console.log(
      `attached   encap ${s.attach.encap.mode} on ${s.attach.encap.iface}, decap ${s.attach.decap.mode} on ${s.attach.decap.iface}${s.attach.deliver ? `, deliver ${s.attach.deliver.mode} on ${s.attach.deliver.iface}` : ''} (since ${s.attach.attachedAt})`,
    );
    if (s.attach.decap.reason) console.log(`decap hook ${s.attach.decap.hook}: ${s.attach.decap.reason}`);
  }
  if (s.fastPath) {
    const f = s.fastPath;
    console.log(
      `fast path  ${f.enabled ? 'on' : 'off'}: ${f.reason}; ${f.endpoints.length} local pods, ${f.podLinks.filter((l) => l.ifindex !== 0).length} pod veths attached`,
    );
    console.log(`  send     ${f.hooks.send}\n           ${formatPathLine(f.send)}`);
    console.log(`  receive  ${f.hooks.receive}\n           ${formatPathLine(f.receive)}`);
    if (f.hooks.tunnel) console.log(`  tunnel   ${f.hooks.tunnel}`);
    for (const r of f.forwardRules ?? []) console.log(`  forward  bypassed by the fast path unless held off: ${r}`);
    for (const e of f.endpoints) console.log(`  pod      ${e.ip.padEnd(16)} ifindex ${String(e.ifindex).padEnd(5)} ${e.mac}`);
  }
  console.log(`peers (${s.peers.length})`);
  for (const p of s.peers)
    console.log(
      `  ${p.publicIp.padEnd(16)} ${p.subnet.padEnd(18)} ${p.vtepMac}  ${p.encap_packets !== undefined ? formatTrafficLine(p as PeerTrafficDoc) : 'no counters'}${p.route === 'direct' ? '  (routed directly: not in these counters)' : ''}`,
    );
  console.log(`traffic    ${formatTrafficLine(s.totals)}`);
  const drops = Object.entries(s.drops).filter(([k]) => !isDeprecatedCounter(k));
  console.log(`drops      ${drops.length ? drops.map(([k, v]) => `${k.replace(/^drop_/, '')}=${v}`).join(' ') : 'none'}`);
  console.log(`pinned (${s.pinned.length}) under ${s.pinDir}`);
  for (const o of s.pinned) console.log(`  ${path.relative(s.pinDir, o.path).padEnd(18)} ${o.kind.padEnd(5)} ${o.detail}`);
  if (s.health) console.log(`health     ${s.health.address}: ${s.health.error ?? `live ${s.health.live}, ready ${s.health.ready}`}`);
  const manager = s.health?.detail?.subnetManager as { kind?: string; connected?: boolean } | undefined;
  if (manager?.kind)
    console.log(
      `subnets    from ${manager.kind === 'kube' ? 'the Kubernetes API (--kube-subnet-mgr)' : 'etcd'}, ${manager.connected ? 'watch connected' : 'watch not connected'}`,
    );
  console.log(s.problems.length ? `problems\n${s.problems.map((p) => `  ${p}`).join('\n')}` : 'problems   none');
}

/** `twill status`: one node's state from its pins, subnet file, attach state and (optionally) healthz; no etcd. */
export async function statusCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, statusOpts);
  const status = await readStatus({ pinDir: o['pin-dir'], subnetFile: o['subnet-file'], healthz: o.healthz || undefined });
  if (o.json) console.log(JSON.stringify(status, null, 2));
  else printStatus(status);
  return 0;
}
