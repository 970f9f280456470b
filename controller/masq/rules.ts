import { cidrContains, formatCidr, type Cidr } from '../net/ipv4.js';
import { cidr6Contains, formatCidr6, type Cidr6 } from '../net/ipv6.js';

/*
 * flannel's --ip-masq and forward-accept rules as data, and the iptables-restore input that
 * brings a node's saved tables to them. Pure: network config, own lease and flags in; rule
 * text out. Rules are written exactly as `iptables-save` prints them, so "in sync" is string
 * equality with what the kernel reports back. IPv6 gets the same chains in ip6tables, as
 * flannel's masqIP6Rules writes them (pkg/trafficmngr/iptables), with IPv6's multicast range.
 */

/** kube-proxy's KUBE-MARK-MASQ bit: it marks what it wants masqueraded itself, and flannel must not NAT those twice. */
export const KUBE_MARK_MASQ_BIT = '0x4000';
const KUBE_PROXY_MASQ_MARK = `${KUBE_MARK_MASQ_BIT}/${KUBE_MARK_MASQ_BIT}`;
const MULTICAST = { 4: '224.0.0.0/4', 6: 'ff00::/8' } as const;
const MASQ_COMMENT = '-m comment --comment "flanneld masq"';
const FORWARD_COMMENT = '-m comment --comment "flanneld forward"';

interface MasqFlags {
  ipMasq: boolean;
  /** MASQUERADE --random-fully, unless --ip-masq-fully-random-disable */
  randomFully: boolean;
  /** --iptables-forward-rules */
  forwardRules: boolean;
}

/** The cluster network (flannel's Network, C) and this node's lease (P), of one family: iptables' or ip6tables'. */
export type MasqInput = MasqFlags & ({ family?: 4; network: Cidr; subnet: Cidr } | { family: 6; network: Cidr6; subnet: Cidr6 });

/** One chain of ours and the single rule that jumps to it from a built-in chain. */
interface ManagedChain {
  table: 'nat' | 'filter';
  chain: string;
  /** the built-in chain that jumps to ours */
  hook: string;
  /** the jump rule's match and target, without "-A hook" */
  jump: string;
  /** flannel inserts the POSTROUTING jump first (ahead of other NAT) and appends the FORWARD one */
  jumpFirst: boolean;
  /** the chain's rules, each an `iptables-save` line without "-A chain" */
  rules: string[];
}

interface DesiredRules {
  present: ManagedChain[];
  /** chains of ours that must not exist (the flag is off): removed with their jump if found */
  absent: ManagedChain[];
}

export class MasqInputError extends Error {
  override name = 'MasqInputError';
}

const MASQ_HOOK = { table: 'nat', chain: 'FLANNEL-POSTRTG', hook: 'POSTROUTING', jump: `${MASQ_COMMENT} -j FLANNEL-POSTRTG`, jumpFirst: true } as const;
const FORWARD_HOOK = { table: 'filter', chain: 'FLANNEL-FWD', hook: 'FORWARD', jump: `${FORWARD_COMMENT} -j FLANNEL-FWD`, jumpFirst: false } as const;

/**
 * Every chain of ours with its jump, whatever their rules: what uninstall removes (planRestore
 * with them all absent), in iptables and ip6tables alike.
 */
export const managedChains: readonly ManagedChain[] = [
  { ...MASQ_HOOK, rules: [] },
  { ...FORWARD_HOOK, rules: [] },
];

/** C and P as iptables-save prints them, and the family's multicast range. */
function masqChain(C: string, P: string, randomFully: boolean, multicast: string = MULTICAST[4]): ManagedChain {
  const masquerade = `-j MASQUERADE${randomFully ? ' --random-fully' : ''}`;
  return {
    ...MASQ_HOOK,
    rules: [
      `-m mark --mark ${KUBE_PROXY_MASQ_MARK} ${MASQ_COMMENT} -j RETURN`,
      // Pod to pod inside the cluster keeps its source address, in both directions.
      `-s ${P} -d ${C} ${MASQ_COMMENT} -j RETURN`,
      `-s ${C} -d ${P} ${MASQ_COMMENT} -j RETURN`,
      // Outside traffic that reached a pod of ours through this node keeps its source too.
      `! -s ${C} -d ${P} ${MASQ_COMMENT} -j RETURN`,
      `-s ${C} ! -d ${multicast} ${MASQ_COMMENT} ${masquerade}`,
      // The host talking to remote pods gets a source address those pods can answer.
      `! -s ${C} -d ${C} ${MASQ_COMMENT} ${masquerade}`,
    ],
  };
}

function forwardChain(C: string): ManagedChain {
  return {
    ...FORWARD_HOOK,
    rules: [`-s ${C} ${FORWARD_COMMENT} -j ACCEPT`, `-d ${C} ${FORWARD_COMMENT} -j ACCEPT`],
  };
}

/** The rule set for this node: what must exist and what must not. */
export function desiredRules(input: MasqInput): DesiredRules {
  const [C, P, inside] =
    input.family === 6
      ? [formatCidr6(input.network), formatCidr6(input.subnet), cidr6Contains(input.network, input.subnet)]
      : [formatCidr(input.network), formatCidr(input.subnet), cidrContains(input.network, input.subnet)];
  if (!inside) throw new MasqInputError(`lease ${P} is not inside the network ${C}`);
  const masq = masqChain(C, P, input.randomFully, MULTICAST[input.family ?? 4]);
  const forward = forwardChain(C);
  return {
    present: [...(input.ipMasq ? [masq] : []), ...(input.forwardRules ? [forward] : [])],
    absent: [...(input.ipMasq ? [] : [masq]), ...(input.forwardRules ? [] : [forward])],
  };
}

/** What `iptables-save` says about one table: declared chains and every "-A" line in order. */
export interface SavedTable {
  chains: Set<string>;
  rules: string[];
}

/** Parses `iptables-save` output (any number of tables; counters, if any, are ignored). */
export function parseIptablesSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let current: SavedTable | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^\[\d+:\d+\] /, '').trimEnd();
    if (line.startsWith('*')) {
      current = { chains: new Set(), rules: [] };
      tables.set(line.slice(1), current);
    } else if (line === 'COMMIT') current = undefined;
    else if (current && line.startsWith(':')) current.chains.add(line.slice(1).split(' ')[0]);
    else if (current && line.startsWith('-A ')) current.rules.push(line);
  }
  return tables;
}

interface RestorePlan {
  /** input for `iptables-restore --noflush`, or undefined when the tables already match */
  script?: string;
  /** what differed, for the log */
  repairs: string[];
}

function chainRules(saved: SavedTable | undefined, chain: string): string[] {
  return (saved?.rules ?? []).filter((r) => r.startsWith(`-A ${chain} `)).map((r) => r.slice(`-A ${chain} `.length));
}

function jumpCount(saved: SavedTable | undefined, c: ManagedChain): number {
  return (saved?.rules ?? []).filter((r) => r === `-A ${c.hook} ${c.jump}`).length;
}

/**
 * The smallest restore that makes the saved tables match `desired`. A chain whose rules differ
 * is declared (which, under --noflush, empties it) and refilled in the same table commit, so its
 * old and new contents are swapped atomically; a chain that already matches is not touched at
 * all, so a restarted agent leaves the live rules (and their counters) alone.
 */
export function planRestore(saved: Map<string, SavedTable>, desired: DesiredRules): RestorePlan {
  const repairs: string[] = [];
  const perTable = new Map<string, { declare: string[]; lines: string[] }>();
  const out = (table: string) => {
    if (!perTable.has(table)) perTable.set(table, { declare: [], lines: [] });
    return perTable.get(table)!;
  };
  for (const c of desired.present) {
    const table = saved.get(c.table);
    const exists = table?.chains.has(c.chain) ?? false;
    const current = chainRules(table, c.chain);
    if (!exists || current.join('\n') !== c.rules.join('\n')) {
      repairs.push(exists ? `${c.table} ${c.chain}: rules differ (${current.length} found, ${c.rules.length} wanted)` : `${c.table} ${c.chain}: chain missing`);
      out(c.table).declare.push(`:${c.chain} - [0:0]`);
      out(c.table).lines.push(...c.rules.map((r) => `-A ${c.chain} ${r}`));
    }
    const jumps = jumpCount(table, c);
    if (jumps === 0) {
      repairs.push(`${c.table} ${c.hook}: jump to ${c.chain} missing`);
      out(c.table).lines.push(c.jumpFirst ? `-I ${c.hook} 1 ${c.jump}` : `-A ${c.hook} ${c.jump}`);
    }
    for (let i = 1; i < jumps; i++) {
      if (i === 1) repairs.push(`${c.table} ${c.hook}: ${jumps} jumps to ${c.chain}, keeping one`);
      out(c.table).lines.push(`-D ${c.hook} ${c.jump}`);
    }
  }
  for (const c of desired.absent) {
    const table = saved.get(c.table);
    const jumps = jumpCount(table, c);
    for (let i = 0; i < jumps; i++) out(c.table).lines.push(`-D ${c.hook} ${c.jump}`);
    if (table?.chains.has(c.chain)) {
      repairs.push(`${c.table} ${c.chain}: not wanted, removing`);
      out(c.table).lines.push(`-F ${c.chain}`, `-X ${c.chain}`);
    } else if (jumps) repairs.push(`${c.table} ${c.hook}: jump to unwanted ${c.chain}, removing`);
  }
  if (perTable.size === 0) return { repairs };
  const script = [...perTable].map(([table, { declare, lines }]) => [`*${table}`, ...declare, ...lines, 'COMMIT'].join('\n')).join('\n') + '\n';
  return { script, repairs };
}
