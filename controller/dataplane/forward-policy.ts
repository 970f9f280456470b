import { run } from '../util/exec.js';
import type { Logger } from '../util/log.js';

/*
 * The fast path takes pod traffic past the node's FORWARD chain. flannel's own rules there
 * (FLANNEL-FWD: accept the cluster network) and kube-proxy's (which conntrack and the stack path
 * already honour) lose nothing by it; anything else in FORWARD, a NetworkPolicy engine's chains
 * above all, would be bypassed. These are found here, in iptables (both families) and in
 * nftables tables of their own hooked on forward, so the agent can say so and, with
 * --fast-path auto, keep pod traffic on the stack while they exist.
 */

/** Chains a FORWARD rule may jump to without being anybody's policy: flannel's (twill's) and kube-proxy's. */
const KNOWN_JUMPS = new Set(['FLANNEL-FWD', 'KUBE-FORWARD', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL']);

/** Pure: the FORWARD rules of an `iptables-save -t filter` (or ip6tables-save) output that are not flannel's or kube-proxy's. */
export function foreignForwardRules(save: string, program = 'iptables'): string[] {
  return save
    .split('\n')
    .filter((l) => l.startsWith('-A FORWARD '))
    .filter((l) => !KNOWN_JUMPS.has(/\s-j\s+(\S+)/.exec(l)?.[1] ?? ''))
    .map((l) => `${program}: ${l}`);
}

/** iptables-nft's own tables: their FORWARD rules are read through iptables-save. */
const IPTABLES_NFT_TABLES = new Set(['filter', 'mangle', 'raw', 'security', 'nat']);

interface NftObject {
  chain?: { family: string; table: string; name: string; hook?: string };
  rule?: { family: string; table: string; chain: string };
}

/** Pure: base chains on the forward hook, with rules, in nftables tables that are neither iptables-nft's nor kube-proxy's (`nft -j list ruleset`). */
export function foreignNftForwardChains(json: string): string[] {
  const objects = ((JSON.parse(json) as { nftables?: NftObject[] }).nftables ?? []).filter((o) => o.chain || o.rule);
  const out: string[] = [];
  for (const { chain } of objects) {
    if (!chain || chain.hook !== 'forward' || chain.table === 'kube-proxy') continue;
    if ((chain.family === 'ip' || chain.family === 'ip6') && IPTABLES_NFT_TABLES.has(chain.table)) continue;
    const rules = objects.filter((o) => o.rule && o.rule.family === chain.family && o.rule.table === chain.table && o.rule.chain === chain.name).length;
    if (rules > 0) out.push(`nft: table ${chain.family} ${chain.table} chain ${chain.name} (${rules} rules)`);
  }
  return out;
}

/** This node's foreign FORWARD rules, as the kernel holds them now. */
export async function readForeignForwardRules(): Promise<string[]> {
  const save = async (program: string) => (await run([`${program}-save`, '-t', 'filter'], { allowFailure: true })).stdout;
  const nft = await run(['nft', '-j', 'list', 'ruleset'], { allowFailure: true });
  return [
    ...foreignForwardRules(await save('iptables')),
    ...foreignForwardRules(await save('ip6tables'), 'ip6tables'),
    ...(nft.code === 0 && nft.stdout.trim() ? foreignNftForwardChains(nft.stdout) : []),
  ];
}

/** Looks at FORWARD every periodMs; calls onChange with the foreign rules at the first look and whenever they change. */
export class ForwardPolicyWatch {
  rules: string[] | undefined;
  private timer?: NodeJS.Timeout;
  private checking = false;

  constructor(private readonly o: { periodMs: number; log: Logger; onChange: (rules: string[]) => void; read?: () => Promise<string[]> }) {}

  async check(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      const rules = await (this.o.read ?? readForeignForwardRules)();
      if (this.rules !== undefined && rules.join('\n') === this.rules.join('\n')) return;
      this.rules = rules;
      this.o.onChange(rules);
    } catch (err) {
      this.o.log.warn('reading the FORWARD rules failed; retried at the next check', { error: (err as Error).message });
    } finally {
      this.checking = false;
    }
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), this.o.periodMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
