import { createHash } from 'node:crypto';
import { KUBE_MARK_MASQ_BIT } from '../masq/rules.js';
import { run } from '../util/exec.js';
import type { LabState } from './state.js';

/*
 * Kubernetes Services in the lab, as kube-proxy's iptables mode writes them: nat PREROUTING and
 * OUTPUT jump to KUBE-SERVICES, a ClusterIP match jumps to KUBE-SVC-*, which picks a KUBE-SEP-*
 * endpoint at random and DNATs to it; traffic from outside the cluster network, and every
 * NodePort connection, is marked 0x4000 (KUBE-MARK-MASQ) and masqueraded in KUBE-POSTROUTING.
 * Replies are un-NATed by conntrack in the host stack, which is why twill keeps every flow on it.
 */

export interface LabService {
  name: string;
  clusterIp: string;
  port: number;
  nodePort?: number;
  targetPort: number;
  /** pod IPs */
  endpoints: string[];
}

const chainId = (...parts: string[]) => createHash('sha256').update(parts.join('/')).digest('base64url').replace(/[-_]/g, 'X').slice(0, 16).toUpperCase();

/** The nat table kube-proxy would install for these services (pure). */
function kubeProxyRules(network: string, services: readonly LabService[]): string {
  const chains = ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ'];
  const rules: string[] = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    `-A KUBE-MARK-MASQ -j MARK --set-xmark ${KUBE_MARK_MASQ_BIT}/${KUBE_MARK_MASQ_BIT}`,
    `-A KUBE-POSTROUTING -m mark ! --mark ${KUBE_MARK_MASQ_BIT}/${KUBE_MARK_MASQ_BIT} -j RETURN`,
    `-A KUBE-POSTROUTING -j MARK --set-xmark ${KUBE_MARK_MASQ_BIT}/0x0`,
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
  for (const svc of services) {
    const svcChain = `KUBE-SVC-${chainId(svc.name)}`;
    chains.push(svcChain);
    rules.push(`-A KUBE-SERVICES -d ${svc.clusterIp}/32 -p tcp -m comment --comment "${svc.name} cluster IP" -m tcp --dport ${svc.port} -j ${svcChain}`);
    rules.push(`-A ${svcChain} ! -s ${network} -d ${svc.clusterIp}/32 -p tcp -m tcp --dport ${svc.port} -j KUBE-MARK-MASQ`);
    svc.endpoints.forEach((ep, i) => {
      const sep = `KUBE-SEP-${chainId(svc.name, ep)}`;
      chains.push(sep);
      const left = svc.endpoints.length - i;
      rules.push(left > 1 ? `-A ${svcChain} -m statistic --mode random --probability ${(1 / left).toFixed(11)} -j ${sep}` : `-A ${svcChain} -j ${sep}`);
      rules.push(`-A ${sep} -s ${ep}/32 -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sep} -p tcp -m tcp -j DNAT --to-destination ${ep}:${svc.targetPort}`);
    });
    if (svc.nodePort) {
      const ext = `KUBE-EXT-${chainId(svc.name)}`;
      chains.push(ext);
      rules.push(`-A KUBE-NODEPORTS -p tcp -m comment --comment "${svc.name}" -m tcp --dport ${svc.nodePort} -j ${ext}`);
      rules.push(`-A ${ext} -j KUBE-MARK-MASQ`, `-A ${ext} -j ${svcChain}`);
    }
  }
  rules.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  return ['*nat', ...chains.map((c) => `:${c} - [0:0]`), ...rules, 'COMMIT', ''].join('\n');
}

/** Installs the services on every node at once per node (one iptables-restore: no half-written table). */
export async function applyServices(state: LabState, services: readonly LabService[]): Promise<void> {
  const table = kubeProxyRules(state.network, services);
  for (const node of state.nodes) {
    await run(['iptables-restore'], { netns: node.netns, input: table });
    await run(['sysctl', '-qw', 'net.ipv4.conf.all.route_localnet=1'], { netns: node.netns });
  }
}
