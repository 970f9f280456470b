import { takeGlobalFlags } from '../util/global-flags.js';
import { agentFlagTable } from '../agent/flags.js';
import type { AttachState } from '../dataplane/attach-state.js';
import { managedChains, planRestore, type SavedTable } from '../masq/rules.js';

/*
 * What `twill uninstall` removes from a node, decided from what was found there. Pure: the
 * findings come from the edge (uninstall/node.ts), which also carries the plan out. Twill's own
 * objects (the BPF datapath, its devices and pins, the CNI plugin it wrote, its state under
 * /run/twill, the pods' records) always go; what flanneld uses as its own (flannel.<VNI>, the
 * kernel routes to peers, the subnet file, the FLANNEL-* chains) goes too, unless the node is
 * handed over to flanneld (`keepFlannel`), which takes them over as they are.
 */

export interface UninstallOptions {
  pinDir: string;
  subnetFile: string;
  /** the CNI plugin file: removed only if twill wrote it */
  cniPlugin: string;
  /** the conflist to remove ('' none: flannel's conflist is the same file, so only when asked) */
  cniConf: string;
  /** where the DaemonSet copies twill for the CNI plugin ('' none) */
  installDir: string;
  keepFlannel: boolean;
}

/** A twill agent process: its pid, the pin directory it serves, whether it is in our network namespace. */
export interface AgentProcessFound {
  pid: number;
  pinDir: string;
  sameNetns: boolean;
}

export interface NodeFindings {
  agents: AgentProcessFound[];
  /** the BPF datapath's traces: pins under the pin dir, the attach state, twill0/twill-rx, the kernel record */
  bpf: { pins: string[]; attachState?: string; devices: string[]; kernelRecord?: string };
  /** twill's programs attached without a pin (netlink XDP, clsact filters), found on every device */
  unpinnedPrograms: UnpinnedProgram[];
  /** flannel.<VNI> / flannel-v6.<VNI> */
  vxlanDevices: string[];
  /** flannel's routes to directly routed peers (host-gw, DirectRouting), as `<subnet> via <PublicIP>` */
  directRoutes: string[];
  /** `iptables-save` / `ip6tables-save`, parsed; absent when the tool is missing */
  iptables: { family: 4 | 6; saved?: Map<string, SavedTable> }[];
  files: {
    subnetFile: boolean;
    endpointsDir?: string;
    /** the plugin file's owner, if there is one */
    cniPlugin?: { twill: boolean; runs?: string };
    cniConf: boolean;
    /** complete or half-made copies of twill under installDir */
    installCopies: string[];
  };
}

/**
 * A twill program attached the way that leaves no pin: XDP through netlink (kernels without XDP
 * links) or a clsact filter (kernels without tcx). Nothing but its device's removal or an
 * explicit detach ends it, so it would outlive the agent and the pins.
 */
export interface UnpinnedProgram {
  dev: string;
  prog: string;
  hook: { kind: 'xdp'; mode: 'xdpdrv' | 'xdpgeneric' | 'xdpoffload' } | { kind: 'tc'; direction: 'ingress' | 'egress'; pref: number; handle: string };
}

/**
 * Pure: whether the agent's detach takes this attachment, by what its attach state records (XDP
 * or a clsact filter on the underlay, a clsact filter on the overlay device) or because the
 * device goes with it; the rest is for the sweep after it.
 */
export function takenByDetach(
  u: UnpinnedProgram,
  state: Pick<AttachState, 'encap' | 'decap' | 'deliver' | 'tunnel'> | undefined,
  devices: readonly string[],
): boolean {
  if (devices.includes(u.dev)) return true;
  if (!state) return false;
  if (u.hook.kind === 'xdp') return u.dev === state.decap.iface && state.decap.mode.startsWith('xdp');
  if (u.hook.direction === 'ingress') return u.dev === state.decap.iface && (state.decap.mode === 'clsact' || state.deliver?.mode === 'clsact');
  return u.dev === state.encap.iface && state.encap.mode === 'clsact';
}

export const describeUnpinned = (u: UnpinnedProgram) =>
  u.hook.kind === 'xdp' ? `${u.prog} (${u.hook.mode}) on ${u.dev}` : `${u.prog} (clsact ${u.hook.direction} pref ${u.hook.pref}) on ${u.dev}`;

export type Step =
  | { kind: 'bpf-datapath'; pinDir: string; found: string[] }
  | { kind: 'unpinned-programs'; found: UnpinnedProgram[] }
  | { kind: 'vxlan-device'; name: string; vni: number; family: 4 | 6 }
  | { kind: 'direct-routes'; routes: string[] }
  | { kind: 'iptables'; family: 4 | 6; script: string; chains: string[] }
  | { kind: 'file'; path: string; what: string }
  | { kind: 'directory'; path: string; what: string };

export interface UninstallPlan {
  /** why nothing may be done (an agent runs); the steps are empty then */
  refusal?: string;
  steps: Step[];
  /** what was found and left in place, and why */
  kept: { name: string; why: string }[];
}

const FOR_FLANNELD = 'kept for flanneld (--keep-flannel)';

/** The device's VNI and family, if the name is flannel's. */
export function flannelDevice(name: string): { vni: number; family: 4 | 6 } | undefined {
  const m = /^flannel(-v6)?\.(\d+)$/.exec(name);
  return m ? { vni: Number(m[2]), family: m[1] ? 6 : 4 } : undefined;
}

const DEFAULT_PIN_DIR = String(agentFlagTable.find((f) => f.name === 'pin-dir')!.def);

/**
 * The pin directory a running `twill agent` serves, from its argv and environment as
 * /proc/<pid>/cmdline and environ hold them; undefined when the process is no twill agent.
 * Read the way the agent's parser reads it (`--pin-dir X`, `-pin-dir=X`, FLANNELD_PIN_DIR, the
 * default), without judging the other flags: an agent of another version may take flags this
 * build does not know, and it serves its pin dir all the same.
 */
export function agentPinDir(argv: readonly string[], env: NodeJS.ProcessEnv): string | undefined {
  // node [V8 flags] <.../bin/twill or .../cli.js> [global flags] agent [flags]
  const script = argv.findIndex((a, i) => i > 0 && /(^|\/)(twill|cli\.js)$/.test(a));
  if (script < 0) return undefined;
  let rest: string[];
  try {
    rest = takeGlobalFlags(argv.slice(script + 1)).argv;
  } catch {
    return undefined;
  }
  if (rest[0] !== 'agent') return undefined;
  let pinDir: string | undefined;
  for (let i = 1; i < rest.length; i++) {
    const m = /^--?pin-dir(?:=(.*))?$/s.exec(rest[i]);
    if (m) pinDir = m[1] ?? rest[++i];
  }
  return pinDir ?? (env.FLANNELD_PIN_DIR || DEFAULT_PIN_DIR);
}

export function planUninstall(found: NodeFindings, o: UninstallOptions): UninstallPlan {
  const running = found.agents.filter((a) => a.sameNetns || a.pinDir === o.pinDir);
  if (running.length > 0) {
    const which = running.map((a) => `pid ${a.pid} (--pin-dir ${a.pinDir}${a.sameNetns ? ', this network namespace' : ''})`).join(', ');
    return {
      refusal: `a twill agent is running on this node: ${which}. Stop it first (systemctl stop twill, or delete the DaemonSet); uninstall would pull the datapath from under it and it would put it back`,
      steps: [],
      kept: [],
    };
  }
  const steps: Step[] = [];
  const kept: UninstallPlan['kept'] = [];
  const bpf = [...found.bpf.devices.map((d) => `device ${d}`), ...found.bpf.pins, ...(found.bpf.attachState ? [found.bpf.attachState] : [])];
  if (bpf.length) steps.push({ kind: 'bpf-datapath', pinDir: o.pinDir, found: bpf });
  // After the detach, which takes the ones its attach state records; these are what is left.
  if (found.unpinnedPrograms.length) steps.push({ kind: 'unpinned-programs', found: found.unpinnedPrograms });

  for (const name of found.vxlanDevices) {
    const dev = flannelDevice(name);
    if (!dev) continue;
    if (o.keepFlannel) kept.push({ name: `device ${name} and its neighbour, FDB and route entries`, why: FOR_FLANNELD });
    else steps.push({ kind: 'vxlan-device', name, ...dev });
  }
  if (found.directRoutes.length) {
    if (o.keepFlannel) kept.push({ name: `routes ${found.directRoutes.join(', ')}`, why: FOR_FLANNELD });
    else steps.push({ kind: 'direct-routes', routes: found.directRoutes });
  }
  for (const { family, saved } of found.iptables) {
    if (!saved) continue;
    const plan = planRestore(saved, { present: [], absent: [...managedChains] });
    if (!plan.script) continue;
    const chains = managedChains
      .filter((c) => saved.get(c.table)?.chains.has(c.chain) || saved.get(c.table)?.rules.includes(`-A ${c.hook} ${c.jump}`))
      .map((c) => `${c.table} ${c.chain}`);
    const tool = family === 6 ? 'ip6tables' : 'iptables';
    if (o.keepFlannel) kept.push({ name: `${tool} ${chains.join(', ')}`, why: FOR_FLANNELD });
    else steps.push({ kind: 'iptables', family, script: plan.script, chains });
  }

  const f = found.files;
  if (f.cniPlugin?.twill) steps.push({ kind: 'file', path: o.cniPlugin, what: `twill's CNI plugin${f.cniPlugin.runs ? `, running ${f.cniPlugin.runs}` : ''}` });
  else if (f.cniPlugin) kept.push({ name: o.cniPlugin, why: "not a plugin twill wrote (flannel's own?)" });
  if (f.cniConf) steps.push({ kind: 'file', path: o.cniConf, what: 'CNI conflist, --cni-conf' });
  for (const copy of f.installCopies) steps.push({ kind: 'directory', path: copy, what: "twill's copy for the CNI plugin" });
  if (f.endpointsDir) steps.push({ kind: 'directory', path: f.endpointsDir, what: "the CNI plugin's pod records" });
  if (found.bpf.kernelRecord) steps.push({ kind: 'file', path: found.bpf.kernelRecord, what: "the agent's kernel probe record" });
  if (f.subnetFile) {
    if (o.keepFlannel) kept.push({ name: o.subnetFile, why: FOR_FLANNELD });
    else steps.push({ kind: 'file', path: o.subnetFile, what: 'subnet file' });
  }
  return { steps, kept };
}

/** One line per step, as `--dry-run` prints it and `--json` lists it. */
export function describeStep(s: Step): string {
  switch (s.kind) {
    case 'bpf-datapath':
      return `BPF datapath of ${s.pinDir}: ${s.found.join(', ')}`;
    case 'unpinned-programs':
      return `programs attached without a pin: ${s.found.map(describeUnpinned).join(', ')}`;
    case 'vxlan-device':
      return `device ${s.name} and its neighbour, FDB and route entries`;
    case 'direct-routes':
      return `routes ${s.routes.join(', ')}`;
    case 'iptables':
      return `${s.family === 6 ? 'ip6tables' : 'iptables'} ${s.chains.join(', ')} and their jumps`;
    case 'file':
    case 'directory':
      return `${s.path} (${s.what})`;
  }
}
