import { z } from 'zod';

/*
 * The fixed choices that more than one front end accepts: the agent's flags, the lab's options
 * and the dataplane spec each take these and only these, so a choice added here reaches all of
 * them. Each list is the literal type, the zod enum the schemas use and the text the flag
 * parser's errors quote.
 */

/** --dataplane: twill's BPF datapath, flannel's kernel VXLAN mode, or whichever the kernel's features allow */
export const DATAPLANES = ['bpf', 'kernel', 'auto'] as const;
export type Dataplane = (typeof DATAPLANES)[number];
export const dataplaneSchema = z.enum(DATAPLANES);

/** --decap-hook: where decap runs (XDP, tc ingress, or picked by the underlay's driver) */
export const DECAP_HOOKS = ['auto', 'xdp', 'tc'] as const;
export type DecapHook = (typeof DECAP_HOOKS)[number];
export const decapHookSchema = z.enum(DECAP_HOOKS);

/** --pod-source-check: a pod's packets from an address that is not its own are dropped, or left to the stack to judge */
export const POD_SOURCE_CHECKS = ['drop', 'allow'] as const;
export type PodSourceCheck = (typeof POD_SOURCE_CHECKS)[number];
export const podSourceCheckSchema = z.enum(POD_SOURCE_CHECKS);

/** the network config's Backend.Type that twill implements */
export const BACKENDS = ['vxlan', 'host-gw'] as const;
export type Backend = (typeof BACKENDS)[number];
export const backendSchema = z.enum(BACKENDS);

/** Pure: a choice list as the flag parser's errors put it, "bpf, kernel or auto". */
export const choiceList = (choices: readonly string[]): string =>
  choices.length > 1 ? `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}` : choices.join('');
