import type { LabPod, LabState } from '../lab/state.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { isDeprecatedCounter } from '../../maps/layout.js';
import { counters, formatPathLine } from './maps.js';
import { spawn } from 'node:child_process';
import { run } from '../util/exec.js';

/** Shows a running lab at work: every cross-node pod pair pings, one TCP transfer per node pair. */
export async function runDemo(state: LabState): Promise<number> {
  // Every address of the target: a dual-stack lab pings each pair in both families.
  const cross = state.pods.flatMap((a) => state.pods.filter((b) => b.node !== a.node).flatMap((b) => (b.ips ?? [b.ip]).map((addr) => [a, b, addr] as const)));
  const families = new Set(cross.map(([, , addr]) => (addr.includes(':') ? 'IPv6' : 'IPv4')));
  console.log(`ping: ${cross.length} cross-node pod pairs and addresses (${[...families].join(' and ')})`);
  let failedPings = 0;
  for (const [a, b, addr] of cross) {
    const ok = (await run(['ping', '-c', '1', '-W', '2', addr], { netns: a.netns, allowFailure: true })).code === 0;
    if (!ok) failedPings++;
    console.log(`  ${a.name.padEnd(8)} -> ${b.name.padEnd(8)} ${addr.padEnd(15)} ${ok ? 'ok' : 'FAILED'}`);
  }

  const firstPodOf = (node: string) => state.pods.find((p) => p.node === node)!;
  const nodePairs = state.nodes.flatMap((a, i) => state.nodes.slice(i + 1).map((b) => [firstPodOf(a.name), firstPodOf(b.name)] as const));
  console.log(`tcp: iperf3, 1 s per node pair`);
  let failedTcp = 0;
  for (const [client, server] of nodePairs) {
    const gbps = await iperfOnce(client, server).catch((e: Error) => {
      console.log(`  ${client.name} -> ${server.name} FAILED: ${e.message.split('\n')[0]}`);
      return undefined;
    });
    if (gbps === undefined) failedTcp++;
    else console.log(`  ${client.name.padEnd(8)} -> ${server.name.padEnd(8)} ${gbps.toFixed(2)} Gbit/s`);
  }

  console.log('datapath counters (encap/decap packets per node; pod packets by path: fast, or to the stack by reason)');
  for (const node of state.nodes) {
    if (node.dataplane !== 'bpf') {
      console.log(`  ${node.name}: ${node.dataplane === 'flanneld' ? `flanneld ${node.flanneldVersion}` : 'twill'}, kernel VXLAN (flannel.1), no BPF counters`);
      continue;
    }
    const maps = DatapathMaps.open(node.pinDir);
    try {
      const s = maps.stats();
      const drops = Object.entries(s).filter(([k, v]) => k.startsWith('drop_') && v !== 0n && !isDeprecatedCounter(k));
      console.log(
        `  ${node.name}: encap ${s.encap_packets}, decap ${s.decap_packets}${drops.length ? `, drops ${drops.map(([k, v]) => `${k}=${v}`).join(' ')}` : ''}`,
      );
      const path = maps.pathStats();
      if (path) console.log(`      pods sent: ${formatPathLine(counters(path.send))}\n      pods received: ${formatPathLine(counters(path.receive))}`);
    } finally {
      maps.close();
    }
  }
  const ok = failedPings === 0 && failedTcp === 0;
  console.log(
    ok
      ? `summary: all ${cross.length} cross-node pod pairs answered and ${nodePairs.length} TCP transfers completed${datapaths(state)}${families.has('IPv6') ? ' (both families)' : ''}`
      : `summary: ${failedPings} of ${cross.length} pings and ${failedTcp} of ${nodePairs.length} TCP transfers FAILED`,
  );
  console.log(`next: bin/twill lab status | bin/twill maps --pin-dir ${state.nodes[0].pinDir} | bin/twill lab down`);
  return ok ? 0 : 1;
}

async function iperfOnce(client: LabPod, server: LabPod, seconds = 1): Promise<number> {
  const port = '5201';
  const srv = spawn('nsenter', [`--net=/run/netns/${server.netns}`, '--', 'iperf3', '-s', '-1', '--forceflush', '-p', port], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      let out = '';
      srv.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (/Server listening/.test(out)) resolve();
      });
      srv.on('close', () => reject(new Error(`iperf3 server in ${server.netns} exited: ${out.trim()}`)));
    });
    const res = await run(['iperf3', '-c', server.ip, '-p', port, '-t', String(seconds), '-J'], { netns: client.netns });
    const doc = JSON.parse(res.stdout) as { end: { sum_received: { bits_per_second: number } } };
    return doc.end.sum_received.bits_per_second / 1e9;
  } finally {
    srv.kill();
  }
}

/** What carried the traffic: twill's BPF datapath alone, or beside kernel VXLAN nodes (twill's or flanneld's). */
function datapaths(state: LabState): string {
  const kinds = new Set(state.nodes.map((n) => n.dataplane));
  const named = [
    kinds.has('bpf') && "twill's BPF datapath",
    kinds.has('kernel') && "twill's kernel VXLAN",
    kinds.has('flanneld') && `flanneld ${state.nodes.find((n) => n.flanneldVersion)?.flanneldVersion}`,
  ].filter(Boolean);
  return ` through ${named.join(', ').replace(/, ([^,]*)$/, ' and $1')}`;
}
