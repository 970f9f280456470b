/*
 * Pure: from the features the running kernel offers (feature-probe.ts finds out) to the dataplane
 * `auto` picks, each choice with the reason a user reads in the log and in `twill status`: twill's
 * BPF datapath, or `kernel`, flannel's kernel VXLAN mode (flannel-vxlan.ts). No I/O here, so
 * every kernel of the README's table is a unit test.
 */

import type { Backend, Dataplane, DecapHook } from '../config/choices.js';

/** One capability as probed: present, absent, or undefined when the probe itself failed. */
export interface Capability {
  present: boolean | undefined;
  /** how it was probed and what the kernel said */
  detail: string;
}

const CAPABILITIES = ['btf', 'tcx', 'redirectPeer', 'redirectNeigh', 'checkMtu', 'conntrackKfuncs', 'ringbuf', 'xdpNative'] as const;
export type CapabilityName = (typeof CAPABILITIES)[number];

export interface FeatureProbe {
  /** uname -r */
  kernel: string;
  /** xdpNative only when an interface was named */
  capabilities: Partial<Record<CapabilityName, Capability>> & Record<Exclude<CapabilityName, 'xdpNative'>, Capability>;
  /** the interface xdpNative was probed on */
  iface?: string;
  probedAt: string;
}

/** The first upstream release with each capability (for reasons and the README's minimums). */
const FIRST_KERNEL: Record<CapabilityName, string> = {
  btf: '5.4',
  tcx: '6.6',
  redirectPeer: '5.10',
  redirectNeigh: '5.10',
  checkMtu: '5.12',
  conntrackKfuncs: '5.19',
  ringbuf: '5.8',
  xdpNative: 'driver',
};

/** What each capability is called where users read it (the BPF helper's own name where there is one). */
const CAPABILITY_LABEL: Record<CapabilityName, string> = {
  btf: 'BTF (vmlinux)',
  tcx: 'tcx',
  redirectPeer: 'bpf_redirect_peer',
  redirectNeigh: 'bpf_redirect_neigh',
  checkMtu: 'bpf_check_mtu',
  conntrackKfuncs: 'conntrack kfuncs',
  ringbuf: 'ring buffer',
  xdpNative: 'XDP native',
};

export interface ChoiceRequest {
  dataplane: Dataplane;
  decapHook: DecapHook;
  fastPath: boolean;
  backend: Backend;
  /** the underlay's link kind (`veth`, or undefined for a physical NIC) */
  underlayKind?: string;
}

export interface DataplaneChoice {
  requested: ChoiceRequest['dataplane'];
  dataplane: 'bpf' | 'kernel';
  /** how tc programs are attached (bpf only) */
  attach?: 'tcx' | 'clsact';
  /** where decap runs, before attach confirms it (bpf only; XDP falls back to tc without native XDP) */
  decap?: 'xdp' | 'tc';
  /** the fast path, if the kernel lets it load (bpf only; attach has the last word) */
  fastPath?: boolean;
  reasons: { dataplane: string; attach?: string; decap?: string; fastPath?: string };
}

/** Every BPF program twill loads calls these, in the stack path's build too: without one nothing loads. */
const REQUIRED_HELPERS = ['redirectNeigh', 'checkMtu', 'redirectPeer'] as const;

const missing = (c: Capability | undefined) => c?.present === false;
const since = (name: CapabilityName) => `${CAPABILITY_LABEL[name]} (Linux ${FIRST_KERNEL[name]}+)`;

export function chooseDataplane(probe: FeatureProbe, req: ChoiceRequest): DataplaneChoice {
  const caps = probe.capabilities;
  const requested = req.dataplane;
  if (requested === 'kernel') return { requested, dataplane: 'kernel', reasons: { dataplane: 'requested (--dataplane kernel): kernel VXLAN as flannel does' } };
  const lacking = REQUIRED_HELPERS.filter((h) => missing(caps[h]));
  if (lacking.length && requested === 'auto')
    return {
      requested,
      dataplane: 'kernel',
      reasons: {
        dataplane: `auto: kernel ${probe.kernel} lacks ${lacking.map(since).join(', ')}, which every twill program calls: kernel VXLAN as flannel does`,
      },
    };
  const attach = caps.tcx.present === false ? 'clsact' : 'tcx';
  const decap = chooseDecapHook(req.backend === 'host-gw' ? 'host-gw' : req.decapHook, req.underlayKind, caps.xdpNative);
  const fast = chooseFastPath(req.fastPath, caps.conntrackKfuncs);
  return {
    requested,
    dataplane: 'bpf',
    attach,
    decap: decap.hook,
    fastPath: fast.enabled,
    reasons: {
      dataplane:
        requested === 'bpf'
          ? 'requested (--dataplane bpf)'
          : `auto: kernel ${probe.kernel} has ${REQUIRED_HELPERS.filter((h) => !missing(caps[h]))
              .map((h) => CAPABILITY_LABEL[h])
              .join(', ')}: BPF`,
      attach:
        attach === 'tcx'
          ? caps.tcx.present
            ? 'tcx links (Linux 6.6+): pinned, swapped atomically on upgrade'
            : `tcx not probed (${caps.tcx.detail}): tcx tried first, clsact if the kernel refuses`
          : `no tcx on kernel ${probe.kernel} (${since('tcx')}): legacy tc clsact filters`,
      decap: decap.reason,
      fastPath: fast.reason,
    },
  };
}

/**
 * Where decap runs. nativeOnly: `auto` takes XDP only in the driver (generic XDP runs after GRO
 * and gains nothing over tc), so attach falls back to tc if the driver refuses.
 */
export function chooseDecapHook(
  requested: ChoiceRequest['decapHook'] | 'host-gw',
  underlayKind?: string,
  xdpNative?: Capability,
): { hook: 'xdp' | 'tc'; nativeOnly: boolean; reason: string } {
  if (requested === 'host-gw')
    return { hook: 'tc', nativeOnly: false, reason: "host-gw: nothing to decapsulate; tc delivers the peers' plain packets into pods" };
  if (requested === 'tc') return { hook: 'tc', nativeOnly: false, reason: 'requested (--decap-hook tc)' };
  if (requested === 'xdp') return { hook: 'xdp', nativeOnly: false, reason: 'requested (--decap-hook xdp)' };
  if (underlayKind === 'veth')
    return {
      hook: 'tc',
      nativeOnly: false,
      reason: "auto: the underlay is a veth, where XDP copies every packet and turns off the peer's segmentation offload",
    };
  if (xdpNative?.present === false)
    return { hook: 'tc', nativeOnly: false, reason: `auto: the underlay's driver has no native XDP (${xdpNative.detail}): decap in tc` };
  return { hook: 'xdp', nativeOnly: true, reason: 'auto: native XDP, ahead of GRO' };
}

/** The fast path as the probe predicts it; attach loads the programs and reports what held. */
function chooseFastPath(requested: boolean, kfuncs: Capability): { enabled: boolean; reason: string } {
  if (!requested) return { enabled: false, reason: 'turned off (--fast-path=false)' };
  if (kfuncs.present === false)
    return { enabled: false, reason: `no ${since('conntrackKfuncs')} (${kfuncs.detail}): stack path, unless the kernel has no conntrack at all` };
  return {
    enabled: true,
    reason: 'bpf_redirect_peer, bpf_redirect_neigh, bpf_check_mtu and the conntrack kfuncs: flows unknown to conntrack bypass the stack',
  };
}

/** One line per capability, for `twill probe` and the VM tier's matrix. */
export function formatProbe(probe: FeatureProbe): string[] {
  return CAPABILITIES.filter((c) => probe.capabilities[c]).map((c) => {
    const cap = probe.capabilities[c]!;
    const mark = cap.present === undefined ? '?' : cap.present ? 'yes' : 'no';
    return `${CAPABILITY_LABEL[c].padEnd(20)} ${mark.padEnd(4)} ${cap.detail}`;
  });
}

/** The VM tier's one line per kernel, which the README's table quotes. */
export function formatChoiceLine(probe: FeatureProbe, choice: DataplaneChoice, actual?: { attach?: string; decap?: string; fastPath?: boolean }): string {
  const yes = (c: CapabilityName) => `${c}=${probe.capabilities[c]?.present === undefined ? '?' : probe.capabilities[c].present ? 'yes' : 'no'}`;
  const got = actual ?? { attach: choice.attach, decap: choice.decap, fastPath: choice.fastPath };
  const mode = choice.dataplane === 'kernel' ? 'kernel-vxlan' : `bpf attach=${got.attach} decap=${got.decap} path=${got.fastPath ? 'fast' : 'stack'}`;
  return `kernel ${probe.kernel}: ${mode} | ${CAPABILITIES.filter((c) => probe.capabilities[c])
    .map(yes)
    .join(' ')}`;
}
