import type { LabNode } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { startInNetns } from './proc.js';

/*
 * What a node's host stack saw of pod traffic: the routed path moves every packet through the
 * node's cni0 bridge and its FORWARD chain, the fast path none.
 */

/** Packets through filter FORWARD: every rule of the chain and its policy (a packet entering it moves at least one). */
export async function forwardPackets(n: LabNode): Promise<number> {
  const save = (await run(['iptables-save', '-c', '-t', 'filter'], { netns: n.netns })).stdout;
  return [...save.matchAll(/^(?::FORWARD \S+ |)\[(\d+):\d+\](?: -A FORWARD .*)?$/gm)]
    .filter((m) => m[0].includes('FORWARD'))
    .reduce((a, m) => a + Number(m[1]), 0);
}

/**
 * IPv4 packets between two pod addresses that the node's cni0 device handles (taken in from a
 * pod, or sent to one). ARP, IPv6 neighbour discovery and the node's own IGMP rightly cross it,
 * and are not counted.
 */
function watchCni0Ipv4(n: LabNode, between: readonly [string, string]) {
  const dump = startInNetns(n.netns, ['tcpdump', '-i', 'cni0', '-nn', '-l', '-q', 'ip', 'and', 'host', between[0], 'and', 'host', between[1]]);
  return {
    ready: () => dump.waitFor(/listening on/),
    stop: async () => {
      await new Promise((r) => setTimeout(r, 200)); // the last frames through the capture buffer
      dump.kill('SIGINT');
      await dump.exited;
      return dump
        .output()
        .split('\n')
        .filter((l) => / IP /.test(l));
    },
  };
}

/** What each node's stack saw of the traffic between two pod addresses while `traffic` ran. */
export async function stackSaw<T>(
  nodes: LabNode[],
  between: readonly [string, string],
  traffic: () => Promise<T>,
): Promise<{ result: T; forward: number[]; cni0Ipv4: string[][] }> {
  const dumps = nodes.map((n) => watchCni0Ipv4(n, between));
  await Promise.all(dumps.map((d) => d.ready()));
  const before = await Promise.all(nodes.map(forwardPackets));
  const result = await traffic();
  const after = await Promise.all(nodes.map(forwardPackets));
  return { result, forward: after.map((a, i) => a - before[i]), cni0Ipv4: await Promise.all(dumps.map((d) => d.stop())) };
}

/** Summary lines of what crossed one underlay port (`tcpdump -q`, IPv4 unless `family` says 6) while `traffic` ran. */
export async function underlayCapture<T>(
  underlayNetns: string,
  port: string,
  traffic: () => Promise<T>,
  family: 4 | 6 = 4,
): Promise<{ result: T; lines: string[] }> {
  const dump = startInNetns(underlayNetns, ['tcpdump', '-i', port, '-nn', '-l', '-q', family === 6 ? 'ip6' : 'ip']);
  await dump.waitFor(/listening on/);
  const result = await traffic();
  await new Promise((r) => setTimeout(r, 200));
  dump.kill('SIGINT');
  await dump.exited;
  return {
    result,
    lines: dump
      .output()
      .split('\n')
      .filter((l) => (family === 6 ? / IP6 / : / IP /).test(l)),
  };
}
