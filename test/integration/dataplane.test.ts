import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, cliPath, repoRoot } from '../support/build.js';
import { parseVxlan, readPcapFrames } from '../support/pcap.js';
import { startInNetns, stopAll } from '../support/proc.js';
import { ping, tcpTransfer } from '../support/traffic.js';
import { craftEnv, expectNoLoss, startPingFlow, stopPingFlows, vxlanDevices } from '../support/lab-session.js';

/*
 * The whole datapath on the real kernel: a 3-node lab (namespaces, real CNI pods), twill's
 * BPF programs on every node, real traffic. Lab name "twt" keeps it apart from a user's lab.
 */
const LAB = 'twt';
const twill = (args: string[], netns?: string) => run([process.execPath, cliPath, ...args], { netns });
const craft = path.join(repoRoot, 'test/support/craft.py');
const listen = path.join(repoRoot, 'test/support/udp-listen.py');

let lab: LabState;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;

async function stats(nodeName: string): Promise<Record<string, number>> {
  const out = await twill(['maps', '--pin-dir', node(nodeName).pinDir, '--json']);
  return (JSON.parse(out.stdout) as { stats: Record<string, number> }).stats;
}

/** twill_path_stats of the receive side, summed over CPUs. */
async function received(nodeName: string): Promise<Record<string, number>> {
  const out = await twill(['maps', '--pin-dir', node(nodeName).pinDir, '--json']);
  return (JSON.parse(out.stdout) as { path: { receive: Record<string, number> } }).path.receive;
}

beforeAll(async () => {
  buildBpf();
  buildTs();
  await twill(['lab', 'down', '--name', LAB]).catch(() => undefined);
  await twill(['lab', 'up', '--name', LAB, '--nodes', '3', '--pods-per-node', '2']);
  lab = JSON.parse((await twill(['lab', 'status', '--name', LAB, '--json'])).stdout) as LabState;
}, 240_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
}, 120_000);

describe('pod traffic across nodes', () => {
  it('every pod pair pings, across nodes and on the same node', async () => {
    expect(lab.pods).toHaveLength(6);
    const failures: string[] = [];
    for (const a of lab.pods)
      for (const b of lab.pods) {
        if (a === b) continue;
        if ((await ping(a.netns, b.ip)).code !== 0) failures.push(`${a.name} -> ${b.name} (${b.ip})`);
      }
    expect(failures).toEqual([]);
  });

  it('every cross-node pod pair passes a TCP transfer', async () => {
    const bytes = 2 * 1024 * 1024;
    const results: string[] = [];
    for (const a of lab.pods)
      for (const b of lab.pods) {
        if (a.node === b.node) continue;
        const { sent, received } = await tcpTransfer(a, b, bytes);
        expect(sent.startsWith(`${bytes} `)).toBe(true);
        if (received !== sent) results.push(`${a.name} -> ${b.name}: sent ${sent}, received ${received}`);
      }
    expect(results).toEqual([]);
  });

  it('node processes reach remote pods and remote pods reach node processes', async () => {
    const n1 = node('n1');
    expect((await ping(n1.netns, pod('n2-p1').ip)).code).toBe(0);
    const n1Gateway = n1.subnet.replace(/0\/\d+$/, '1'); // cni0 address on n1
    const n1Overlay = n1.subnet.split('/')[0]; // twill0's .0 address, like flannel.1
    expect((await ping(pod('n3-p1').netns, n1Gateway)).code).toBe(0);
    expect((await ping(pod('n3-p1').netns, n1Overlay)).code).toBe(0);
  });

  it("uses none of flannel's vxlan machinery: only twill-rx, flow-based, no FDB entries, no per-peer neighbour entries", async () => {
    for (const n of lab.nodes) {
      expect(await vxlanDevices(n.netns)).toEqual([{ ifname: 'twill-rx', external: true, fdbEntries: 0 }]);
      const fdb = (await run(['bridge', '-n', n.netns, 'fdb', 'show'])).stdout;
      expect(fdb).not.toMatch(/ dst /);
      expect((await run(['ip', '-n', n.netns, 'neigh', 'show', 'dev', 'twill0'])).stdout.trim()).toBe('');
    }
  });
});

describe('wire format', () => {
  it("puts flannel's VXLAN on the underlay: UDP 8472, VNI 1, VTEP MACs inside, inner TTL decremented", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'twill-pcap-'));
    const file = path.join(dir, 'n1.pcap');
    try {
      // The underlay bridge port of node n1 sees exactly what n1 puts on the wire.
      const dump = startInNetns(lab.underlay.netns, ['tcpdump', '-i', 'n1', '-U', '-n', '-c', '2', '-w', file, 'udp', 'and', 'src', node('n1').underlayIp]);
      await dump.waitFor(/listening on/);
      expect((await ping(pod('n1-p1').netns, pod('n2-p1').ip, 2)).code).toBe(0);
      await dump.exited;
      const frames = readPcapFrames(file)
        .map(parseVxlan)
        .filter((f) => f !== undefined);
      expect(frames.length).toBeGreaterThanOrEqual(1);
      for (const f of frames) {
        expect(f).toMatchObject({
          outerSrc: node('n1').underlayIp,
          outerDst: node('n2').underlayIp,
          outerTtl: 64,
          udpDstPort: 8472,
          vxlanFlags: 0x08,
          vni: 1,
          innerSrcMac: node('n1').vtepMac,
          innerDstMac: node('n2').vtepMac,
          innerSrc: pod('n1-p1').ip,
          innerDst: pod('n2-p1').ip,
          innerTtl: 63, // 64 from the pod, minus the hop through node n1's stack
          innerProto: 1,
        });
        expect(f.udpSrcPort).toBeGreaterThanOrEqual(32768);
        expect(f.udpSrcPort).toBeLessThanOrEqual(60999);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('hostile and malformed VXLAN', () => {
  const target = () => pod('n1-p1');
  const send = (from: string, src: string, kind: string) =>
    run(['/usr/bin/python3', craft, kind, src, node('n1').underlayIp, target().ip, '1', '8472', node('n1').vtepMac], { netns: from, env: craftEnv(lab, src) });

  /** Sends each kind, then a well-formed packet from a peer; returns what the pod received. */
  async function deliverRound(from: string, src: string, kinds: string[]): Promise<string[]> {
    // It stops at the well-formed probe; the bound is for a probe that never comes, and is wide
    // because each crafted packet costs a scapy start (over a second on a loaded machine).
    const listener = startInNetns(target().netns, ['/usr/bin/python3', listen, '9999', 'twill-probe:good', '90']);
    await listener.waitFor(/listening/);
    for (const k of kinds) await send(from, src, k);
    await send(node('n2').netns, node('n2').underlayIp, 'good');
    await listener.exited;
    return listener
      .output()
      .split('\n')
      .filter((l) => l.startsWith('twill-probe'));
  }

  it('drops and counts VXLAN from an address that holds no lease; a peer gets through', async () => {
    const before = await stats('n1');
    // The underlay gateway (.254) is on the wire but is not a node: no lease, no entry.
    const got = await deliverRound(lab.underlay.netns, lab.underlay.gateway, ['good']);
    const after = await stats('n1');
    expect(got).toEqual(['twill-probe:good']); // only the peer's copy
    expect(after.drop_unknown_source - before.drop_unknown_source).toBe(1);
  });

  const cases: [string, string | undefined][] = [
    ['bad-vni', 'drop_bad_vni'],
    ['no-i-flag', 'drop_malformed'],
    ['truncated-vxlan', 'drop_malformed'],
    ['truncated-inner-eth', 'drop_malformed'],
    ['truncated-inner-ip', 'drop_malformed'],
    ['ip-options', 'drop_ip_options'],
    ['inner-arp', 'drop_inner_not_ipv4'],
    ['inner-ipv6', 'drop_inner_not_ipv4'],
    ['inner-dst-elsewhere', 'drop_inner_dst'],
    ['wrong-port', undefined], // not VXLAN for us: passes untouched to the stack, which has no socket there
  ];

  it('never delivers malformed packets from a known peer, counts each under its reason, keeps forwarding', async () => {
    const n2 = node('n2');
    const before = await stats('n1');
    const got = await deliverRound(
      n2.netns,
      n2.underlayIp,
      cases.map(([k]) => k),
    );
    const after = await stats('n1');
    expect(got).toEqual(['twill-probe:good']);
    const expected: Record<string, number> = {};
    for (const [, reason] of cases) if (reason) expected[reason] = (expected[reason] ?? 0) + 1;
    for (const [reason, n] of Object.entries(expected)) expect(after[reason] - before[reason], reason).toBe(n);
    expect(after.decap_packets - before.decap_packets).toBeGreaterThanOrEqual(1);
  });
});

describe('fragmented VXLAN (a kernel peer does not set DF)', () => {
  // craft.py's "fragment": a well-formed VXLAN packet of 1.9 KB split into 600-byte IP fragments.
  const fragmentProbe = (lines: string[]) => lines.filter((l) => l.startsWith('twill-probe:fragment')).length;

  it('from a peer: reassembled by the stack, decapped on twill-rx, checked and delivered', async () => {
    const n2 = node('n2');
    const before = { stats: await stats('n1'), path: await received('n1') };
    const got = await deliverFragments(n2.netns, n2.underlayIp);
    const after = { stats: await stats('n1'), path: await received('n1') };
    expect(fragmentProbe(got)).toBe(1);
    expect(after.path.fragment - before.path.fragment).toBe(1); // counted by twill_tunnel_rx
    expect(after.stats.drop_fragment - before.stats.drop_fragment).toBe(0);
  });

  it('from an address with no lease: reassembled, then dropped and counted, never delivered', async () => {
    const before = await stats('n1');
    const got = await deliverFragments(lab.underlay.netns, lab.underlay.gateway);
    const after = await stats('n1');
    expect(fragmentProbe(got)).toBe(0);
    expect(after.drop_unknown_source - before.drop_unknown_source).toBe(1);
  });

  /** Sends the fragments, then a well-formed packet from a peer to end the round; returns what the pod received. */
  async function deliverFragments(from: string, src: string): Promise<string[]> {
    const target = pod('n1-p1');
    const listener = startInNetns(target.netns, ['/usr/bin/python3', listen, '9999', 'twill-probe:good', '10']);
    await listener.waitFor(/listening/);
    const args = (kind: string, source: string) => ['/usr/bin/python3', craft, kind, source, node('n1').underlayIp, target.ip, '1', '8472', node('n1').vtepMac];
    await run(args('fragment', src), { netns: from, env: craftEnv(lab, src) });
    await run(args('good', node('n2').underlayIp), { netns: node('n2').netns, env: craftEnv(lab, node('n2').underlayIp) });
    await listener.exited;
    return listener.output().split('\n');
  }
});

describe('maps and lifecycle', () => {
  it('bpftool shows the maps with field names, addresses and MACs as byte arrays', async () => {
    const n1 = node('n1');
    const dump = JSON.parse((await run(['bpftool', '-j', 'map', 'dump', 'pinned', `${n1.pinDir}/twill_subnets`])).stdout) as {
      formatted: { key: { subnet: number[] }; value: { public_ip: number[]; vtep_mac: number[] } };
    }[];
    const bySubnet = new Map(dump.map((e) => [e.formatted.key.subnet.join('.'), e.formatted.value]));
    for (const peer of lab.nodes.filter((n) => n !== n1)) {
      const v = bySubnet.get(peer.subnet.split('/')[0]);
      expect(v, peer.subnet).toBeDefined();
      expect(v!.public_ip.join('.')).toBe(peer.underlayIp);
      expect(v!.vtep_mac.map((b) => b.toString(16).padStart(2, '0')).join(':')).toBe(peer.vtepMac);
    }
    expect(bySubnet.size).toBe(2);
    const text = (await run(['bpftool', 'map', 'dump', 'pinned', `${n1.pinDir}/twill_config`])).stdout;
    expect(text).toMatch(/"vtep_mac": \[/);
    expect(text).toMatch(/"vxlan_port": 8472/);
  });

  it('a second loader swaps programs on the existing links', async () => {
    const n1 = node('n1');
    const linkInfo = async () =>
      JSON.parse((await run(['bpftool', '-j', 'link', 'show', 'pinned', `${n1.pinDir}/links/encap`])).stdout) as { id: number; prog_id: number };
    const before = await linkInfo();
    const res = await twill(attachArgs('n1'), n1.netns);
    expect(JSON.parse(res.stdout).swapped).toEqual({ encap: true, decap: true });
    const after = await linkInfo();
    expect(after.id).toBe(before.id);
    expect(after.prog_id).not.toBe(before.prog_id);
  });

  it('traffic keeps flowing while loaders are killed with SIGKILL, mid-attach and after it', async () => {
    const n1 = node('n1');
    const flow = startPingFlow(pod('n1-p1'), pod('n2-p1').ip, 'n2');
    await flow.waitFor(/^first reply$/m);
    // Each kill lands once the loader has begun attaching (its overlay device is ready, the BPF
    // objects are next) and before it finished: it never got to log "datapath attached".
    for (const delayMs of [0, 10, 30]) {
      const loader = startInNetns(n1.netns, [process.execPath, cliPath, ...attachArgs('n1'), '-v', '--log-format', 'json']);
      await loader.waitFor(/"msg":"overlay device ready"/, 20_000);
      if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
      loader.kill('SIGKILL');
      await loader.exited;
      expect(loader.output()).not.toContain('"msg":"datapath attached"');
    }
    const holder = startInNetns(n1.netns, [process.execPath, cliPath, ...attachArgs('n1'), '--hold']);
    await holder.waitFor(/"swapped"/, 20_000);
    holder.kill('SIGKILL');
    await holder.exited;
    expectNoLoss(await stopPingFlows([flow], { lastFault: Date.now() }));
    expect((await ping(pod('n1-p2').netns, pod('n3-p2').ip)).code).toBe(0);
  });

  it('dataplane detach removes links, the overlay device and the pins', async () => {
    const n3 = node('n3');
    await twill(['dataplane', 'detach', '--pin-dir', n3.pinDir], n3.netns);
    expect((await run(['ip', '-n', n3.netns, 'link', 'show', 'twill0'], { allowFailure: true })).code).not.toBe(0);
    expect((await run(['ip', '-n', n3.netns, '-d', 'link', 'show', 'eth0'])).stdout).not.toMatch(/prog\/xdp/);
    expect((await run(['ls', n3.pinDir], { allowFailure: true })).code).not.toBe(0);
    expect((await ping(pod('n1-p1').netns, pod('n3-p1').ip)).code).not.toBe(0);
  });
});

function attachArgs(name: string): string[] {
  const n = node(name);
  return [
    'dataplane',
    'attach',
    '--pin-dir',
    n.pinDir,
    '--iface',
    n.iface,
    '--public-ip',
    n.underlayIp,
    '--vtep-mac',
    n.vtepMac,
    '--subnet',
    n.subnet,
    '--network',
    lab.network,
  ];
}
