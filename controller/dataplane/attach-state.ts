import { existsSync } from 'node:fs';
import { z } from 'zod';
import { decapHookSchema } from '../config/choices.js';
import { readStateFile, writeStateFile } from '../util/state-file.js';
import { dataplaneSpecSchema, pinPaths, type DataplaneSpec } from './spec.js';

/*
 * The attach state: what attachDataplane attached where, recorded under /run beside the pins so
 * that the next attach (an upgrade swaps programs on the same links), detach, status and
 * uninstall know it without being told.
 */

/** How a tc program is attached: a tcx link (Linux 6.6+), or a filter in the clsact qdisc. */
const TC_MODES = ['tcx', 'clsact'] as const;
export type TcMode = (typeof TC_MODES)[number];
/** Where decap runs: in XDP (through a link, or netlink's native or generic mode), or at tc ingress. */
const DECAP_MODES = ['xdp-link', 'xdp-native', 'xdp-generic', ...TC_MODES] as const;
export type DecapMode = (typeof DECAP_MODES)[number];
export const isTcMode = (m: DecapMode): m is TcMode => m === 'tcx' || m === 'clsact';

/** What is attached where; written next to the pins so status and detach need no flags. */
export interface AttachState {
  spec: DataplaneSpec;
  encap: { mode: TcMode; iface: string; ifindex: number };
  /** hook, requested and reason: absent in states written before `--decap-hook auto` */
  decap: { mode: DecapMode; iface: string; ifindex: number; hook?: 'xdp' | 'tc'; requested?: DataplaneSpec['decapHook']; reason?: string };
  /** with decap in XDP: the tc program on the same device that delivers decapped packets into pods */
  deliver?: { mode: TcMode; iface: string; ifindex: number };
  /** absent in states written before the fast path existed */
  fastPath?: FastPathState;
  /** the receive-only vxlan device that holds the VXLAN port; up false while flannel.<VNI> holds it */
  tunnel?: { iface: string; ifindex: number; mode: TcMode; up: boolean; reason?: string };
  layoutVersion: number;
  attachedAt: string;
}

export interface FastPathState {
  /** --fast-path as given */
  requested: boolean;
  /** pod traffic to and from remote pods may bypass the host stack (twill_config.flags) */
  enabled: boolean;
  /** the programs look flows up in the node's conntrack (false: the kernel has no conntrack) */
  conntrack: boolean;
  /** why it is off, or how it runs */
  reason: string;
}

const tcMode = z.enum(TC_MODES);
const attached = { iface: z.string(), ifindex: z.number().int() };
/** Loose: a field a newer version added survives this version's rewrite of the file. */
const attachStateSchema: z.ZodType<AttachState> = z.looseObject({
  spec: dataplaneSpecSchema,
  encap: z.object({ mode: tcMode, ...attached }),
  decap: z.object({
    mode: z.enum(DECAP_MODES),
    ...attached,
    hook: z.enum(['xdp', 'tc']).optional(),
    requested: decapHookSchema.optional(),
    reason: z.string().optional(),
  }),
  deliver: z.object({ mode: tcMode, ...attached }).optional(),
  fastPath: z.object({ requested: z.boolean(), enabled: z.boolean(), conntrack: z.boolean(), reason: z.string() }).optional(),
  tunnel: z.object({ mode: tcMode, ...attached, up: z.boolean(), reason: z.string().optional() }).optional(),
  layoutVersion: z.number().int(),
  attachedAt: z.string(),
});

export function readAttachState(pinDir: string): AttachState | undefined {
  const file = pinPaths(pinDir).attachState;
  if (!existsSync(file)) return undefined;
  return readStateFile('attach state', file, attachStateSchema);
}

export function writeAttachState(pinDir: string, state: AttachState): void {
  writeStateFile(pinPaths(pinDir).attachState, state);
}
