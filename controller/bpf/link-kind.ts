/*
 * Pure: what a link is (from bpf_link_get_info_by_fd) and whether it is the kind a pin is
 * expected to hold. Constants from uapi/linux/bpf.h.
 */

/** enum bpf_link_type, in order */
const LINK_TYPE_NAMES = [
  'unspec',
  'raw_tracepoint',
  'tracing',
  'cgroup',
  'iter',
  'netns',
  'xdp',
  'perf_event',
  'kprobe_multi',
  'struct_ops',
  'netfilter',
  'tcx',
  'uprobe_multi',
  'netkit',
  'sockmap',
] as const;
export const LINK_TYPE_XDP = 6;
export const LINK_TYPE_TCX = 11;
export const LINK_TYPE_NETKIT = 13;
/** enum bpf_attach_type */
export const BPF_XDP = 37;
export const BPF_TCX = { ingress: 46, egress: 47 } as const;
const TCX_DIRECTION: Record<number, TcxDirection> = { [BPF_TCX.ingress]: 'ingress', [BPF_TCX.egress]: 'egress' };

export type TcxDirection = 'ingress' | 'egress';

export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  /** xdp, tcx and netkit links */
  ifindex?: number;
  /** tcx (46/47) and netkit links; XDP links report none */
  attachType?: number;
}

/** What a pinned link must be for twill to reuse it. */
export type LinkKind = { type: 'tcx'; direction: TcxDirection } | { type: 'xdp' };

export function describeLinkKind(kind: LinkKind): string {
  return kind.type === 'tcx' ? `tcx ${kind.direction}` : 'xdp';
}

/** "tcx egress", "xdp", "cgroup", or "link type 42" for a type this table does not know. */
export function describeLink(info: Pick<LinkInfo, 'type' | 'attachType'>): string {
  const name = LINK_TYPE_NAMES[info.type] ?? `link type ${info.type}`;
  if (info.type !== LINK_TYPE_TCX) return name;
  return `${name} ${TCX_DIRECTION[info.attachType ?? -1] ?? `attach type ${info.attachType}`}`;
}

/** undefined when the link is of the expected kind, else what it is instead. */
export function linkKindMismatch(info: Pick<LinkInfo, 'type' | 'attachType'>, want: LinkKind): string | undefined {
  const matches = want.type === 'xdp' ? info.type === LINK_TYPE_XDP : info.type === LINK_TYPE_TCX && info.attachType === BPF_TCX[want.direction];
  return matches ? undefined : describeLink(info);
}
