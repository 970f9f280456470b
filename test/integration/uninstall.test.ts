import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopAgent } from '../../controller/lab/agents.js';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { ifNameToIndex, PinnedProgram, tcClsactAttach } from '../../controller/bpf/libbpf.js';
import { readAttachState } from '../../controller/dataplane/attach-state.js';
import { pinPaths } from '../../controller/dataplane/spec.js';
import { choiceRecordPath } from '../../controller/dataplane/choice-record.js';
import type { UninstallReport } from '../../controller/cli/uninstall.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, repoRoot } from '../support/build.js';
import { startInNetns, stopAll } from '../support/proc.js';
import { enterNetns } from '../support/setns.js';
import { bounceAgent, etcdctl, fakeLease, labUpFresh, leaseKey, readMaps, twill, until } from '../support/lab-session.js';

/*
 * `twill uninstall` on lab nodes whose agents are gone ("tu1", underlay 192.168.111.0/24): a BPF
 * node with decap in XDP whose agent crashed, and a kernel VXLAN node with --ip-masq; then a
 * kernel host-gw node ("tu3") and dual-stack nodes ("tu4"), one lab after the other on
 * 192.168.113.0/24. The rollback to flanneld that deploy/README.md describes is run against the
 * real flanneld in flanneld-migration.test.ts. A
 * namespace "tu1-np" on tu1's underlay plays a peer that joined after n1's agent died.
 */
const craft = path.join(repoRoot, 'test/support/craft.py');
const listen = path.join(repoRoot, 'test/support/udp-listen.py');
const NEW_PEER = 'tu1-np';
const NEW_PEER_IP = '192.168.111.200';
let scratch: string;

beforeAll(() => {
  buildBpf();
  buildTs();
  scratch = mkdtempSync(path.join(tmpdir(), 'tu-'));
});
afterAll(async () => {
  await stopAll();
  await run(['ip', 'netns', 'del', NEW_PEER], { allowFailure: true });
  rmSync(scratch, { recursive: true, force: true });
});

/** Where a node's CNI plugin, conflist and the DaemonSet's copies of twill go in this test (the host's /opt/cni/bin, /etc/cni/net.d, /opt/twill). */
const hostDirs = (n: LabNode) => ({
  bin: path.join(scratch, n.name, 'bin'),
  conf: path.join(scratch, n.name, 'net.d/10-flannel.conflist'),
  install: path.join(scratch, n.name, 'opt-twill'),
});

async function uninstall(lab: LabState, n: LabNode, extra: string[] = []): Promise<{ code: number | null; report: UninstallReport; stderr: string }> {
  const d = hostDirs(n);
  const res = await twill(['uninstall', '--pin-dir', n.pinDir, '--subnet-file', n.subnetFile, '--cni-bin-dir', d.bin, '--json', ...extra], n.netns);
  return { code: res.code, report: JSON.parse(res.stdout) as UninstallReport, stderr: res.stderr };
}

/** The kernel ids of every link pinned for the node (its own hooks and the pods'). */
async function pinnedLinkIds(n: LabNode): Promise<number[]> {
  const dir = `${n.pinDir}/links`;
  // The pods/ directory is no link: bpftool refuses it.
  const pins = readdirSync(dir, { recursive: true, encoding: 'utf8' }).map((p) => path.join(dir, p));
  const ids: number[] = [];
  for (const pin of pins) {
    const res = await run(['bpftool', '-j', 'link', 'show', 'pinned', pin], { allowFailure: true });
    if (res.code === 0) ids.push((JSON.parse(res.stdout) as { id: number }).id);
  }
  return ids;
}

const linkExists = async (id: number) => (await run(['bpftool', 'link', 'show', 'id', String(id)], { allowFailure: true })).code === 0;
const hasDevice = async (n: LabNode, dev: string) => (await run(['ip', '-n', n.netns, 'link', 'show', dev], { allowFailure: true })).code === 0;
const iptablesSave = async (n: LabNode) => (await run(['iptables-save'], { netns: n.netns })).stdout;

describe('uninstall on nodes whose agents are gone', () => {
  const LAB = 'tu1';
  let lab: LabState;
  const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
  const sendGood = (n: LabNode, count: number) =>
    run(
      [
        '/usr/bin/python3',
        '-c',
        `import runpy, sys\nfor i in range(${count}):\n  sys.argv = ["craft.py", "good", "${NEW_PEER_IP}", "${n.underlayIp}", "${lab.pods.find((p) => p.node === n.name)!.ip}", "1", "8472", "${n.vtepMac}"]\n  runpy.run_path("${craft}")`,
      ],
      // From inside the new peer's lease (10.244.200.0/24, below): a peer speaks only for its own pods.
      { netns: NEW_PEER, env: { ...process.env, INNER_SRC: '10.244.200.77' } },
    );

  beforeAll(async () => {
    lab = await labUpFresh(LAB, ['--nodes', '3', '--kernel-nodes', '1', '--pods-per-node', '1', '--decap-hook', 'xdp', '--underlay', '192.168.111.0/24']);
    for (const n of lab.nodes) mkdirSync(path.dirname(hostDirs(n).conf), { recursive: true });
    await run(['ip', 'netns', 'del', NEW_PEER], { allowFailure: true });
    await run(['ip', 'netns', 'add', NEW_PEER]);
    await run(['ip', 'link', 'add', 'eth0', 'netns', NEW_PEER, 'type', 'veth', 'peer', 'name', 'tu1np', 'netns', lab.underlay.netns]);
    await run(['ip', '-n', lab.underlay.netns, 'link', 'set', 'tu1np', 'master', 'br0', 'up']);
    await run(['ip', '-n', NEW_PEER, 'addr', 'add', `${NEW_PEER_IP}/24`, 'dev', 'eth0']);
    await run(['ip', '-n', NEW_PEER, 'link', 'set', 'eth0', 'up']);
  }, 180_000);
  afterAll(async () => {
    await twill(['lab', 'down', '--name', LAB]);
  }, 60_000);

  it("refuses while the node's agent runs, and changes nothing", async () => {
    const n2 = node('n2');
    const { code, report, stderr } = await uninstall(lab, n2);
    expect(code).toBe(1);
    expect(report.refused).toContain(`a twill agent is running on this node: pid ${n2.agent!.pid} (--pin-dir ${n2.pinDir}, this network namespace)`);
    expect(report.removed).toEqual([]);
    expect(stderr).toBe('');
    expect(existsSync(`${n2.pinDir}/links/decap`)).toBe(true);
    expect(await hasDevice(n2, 'twill0')).toBe(true);
  });

  it('an agent gone for good leaves its XDP program dropping VXLAN from a peer that joined since', async () => {
    const n1 = node('n1');
    await stopAgent(n1.agent!.pid, n1.pinDir, 'SIGKILL'); // a crash, not restarted
    expect(readAttachState(n1.pinDir)?.decap.mode).toBe('xdp-link');
    expect((await run(['ip', '-d', 'link', 'show', 'eth0'], { netns: n1.netns })).stdout).toMatch(/prog\/xdp id \d+/);
    await etcdctl(lab, 'put', leaseKey('10.244.200.0/24'), fakeLease(NEW_PEER_IP, '02:00:00:00:01:c8'));
    // A live agent admits the new peer; the dead one cannot.
    await until('n2 to admit the new peer', async () => (await readMaps(node('n2'))).peers.some((p) => p.publicIp === NEW_PEER_IP));
    expect((await readMaps(n1)).peers.map((p) => p.publicIp)).not.toContain(NEW_PEER_IP);
    const before = (await readMaps(n1)).stats;
    await sendGood(n1, 3);
    const after = (await readMaps(n1)).stats;
    expect({ dropped: after.drop_unknown_source - before.drop_unknown_source, decapped: after.decap_packets - before.decap_packets }).toEqual({
      dropped: 3,
      decapped: 0,
    });
  });

  it("removes the crashed BPF node's links, programs, pins, devices, chains, plugin, conflist, copies, records and subnet file, and names them", async () => {
    const n1 = node('n1');
    const d = hostDirs(n1);
    expect((await twill(['cni', 'install', '--dir', d.bin, '--name', 'flannel'])).code).toBe(0);
    writeFileSync(d.conf, '{"name":"cbr0","cniVersion":"0.4.0","plugins":[{"type":"flannel"}]}\n');
    // The DaemonSet's install-cni-plugin copy, and something else in that directory that is not one.
    for (const dir of ['0.1.0', 'unrelated']) mkdirSync(path.join(d.install, dir), { recursive: true });
    cpSync(path.join(repoRoot, 'package.json'), path.join(d.install, '0.1.0/package.json'));
    // A kernel without tcx attaches pods with clsact filters, which no pin holds: one on the pod's veth, as the agent makes it there.
    const veth = (JSON.parse((await run(['ip', '-n', n1.netns, '-j', 'link', 'show', 'type', 'veth'])).stdout) as { ifname: string }[])
      .map((l) => l.ifname)
      .find((n) => n !== 'eth0')!;
    const back = enterNetns(`/run/netns/${n1.netns}`);
    try {
      const prog = PinnedProgram.fromPin(pinPaths(n1.pinDir).podProgram);
      tcClsactAttach(prog, ifNameToIndex(veth), 'ingress', { handle: 1, priority: 1 });
      prog.close();
    } finally {
      back();
    }
    const podFilters = async () => (await run(['tc', 'filter', 'show', 'dev', veth, 'ingress'], { netns: n1.netns })).stdout;
    expect(await podFilters()).toContain('twill_from_pod');
    const links = await pinnedLinkIds(n1);
    expect(links.length).toBeGreaterThanOrEqual(4); // encap, decap (XDP), deliver, tunnel-rx, the pod's
    expect(await iptablesSave(n1)).toContain(':FLANNEL-FWD');
    const attachDir = path.dirname(`/run/twill/dataplane/${n1.pinDir.replace('/sys/fs/bpf/', '')}/attach.json`);
    const endpoints = path.join(path.dirname(n1.subnetFile), 'endpoints');
    for (const p of [n1.pinDir, attachDir, choiceRecordPath(n1.pinDir), endpoints, n1.subnetFile]) expect(existsSync(p), p).toBe(true);

    expect(await hasDevice(n1, 'twill-hr')).toBe(true); // the pod bridge's headroom port
    const extra = ['--cni-conf', d.conf, '--install-dir', d.install];
    const dry = await uninstall(lab, n1, [...extra, '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.report.removed.join('\n')).toContain(`BPF datapath of ${n1.pinDir}: device twill0, device twill-rx`);
    // The XDP link on eth0 is the detach's; the pod veth's filter is left for the sweep after it.
    expect(dry.report.removed).toContain(`programs attached without a pin: twill_from_pod (clsact ingress pref 1) on ${veth}`);
    expect(existsSync(`${n1.pinDir}/links/decap`)).toBe(true); // a dry run changes nothing

    const { code, report } = await uninstall(lab, n1, extra);
    expect(code).toBe(0);
    expect(report.refused).toBeUndefined();
    for (const id of links) expect(await linkExists(id), `link ${id}`).toBe(false);
    expect((await run(['ip', '-d', 'link', 'show', 'eth0'], { netns: n1.netns })).stdout).not.toMatch(/xdp/);
    for (const dev of ['twill0', 'twill-rx', 'twill-hr']) expect(await hasDevice(n1, dev), dev).toBe(false);
    expect(await podFilters()).not.toContain('twill_');
    expect(await iptablesSave(n1)).not.toContain('FLANNEL');
    for (const p of [
      n1.pinDir,
      attachDir,
      choiceRecordPath(n1.pinDir),
      endpoints,
      n1.subnetFile,
      path.join(d.bin, 'flannel'),
      d.conf,
      path.join(d.install, '0.1.0'),
    ])
      expect(existsSync(p), p).toBe(false);
    expect(existsSync(path.join(d.install, 'unrelated'))).toBe(true);
    expect(report.removed).toEqual(
      expect.arrayContaining([
        `${n1.pinDir}/links/decap`,
        `twill_from_pod (clsact ingress pref 1) on ${veth}`,
        'device twill-rx',
        'device twill0',
        n1.pinDir,
        'iptables filter FLANNEL-FWD and its jump',
        `${path.join(d.bin, 'flannel')} (twill's CNI plugin, running ${repoRoot})`,
        `${d.conf} (CNI conflist, --cni-conf)`,
        `${path.join(d.install, '0.1.0')} (twill's copy for the CNI plugin)`,
        `${endpoints} (the CNI plugin's pod records)`,
        `${choiceRecordPath(n1.pinDir)} (the agent's kernel probe record)`,
        `${n1.subnetFile} (subnet file)`,
      ]),
    );
    expect(report.removed.filter((r) => r.startsWith(`${n1.pinDir}/links/pods/`))).toHaveLength(1);

    const again = await uninstall(lab, n1, extra);
    expect(again).toMatchObject({ code: 0, report: { removed: [], kept: [] } });
    expect((await twill(['uninstall', '--pin-dir', n1.pinDir, '--subnet-file', n1.subnetFile, '--cni-bin-dir', d.bin], n1.netns)).stdout).toBe(
      `nothing to remove: no trace of twill for ${n1.pinDir} on this node\n`,
    );
  });

  it("after it, VXLAN from the new peer is no longer dropped: it reaches the node's stack on the VXLAN port", async () => {
    const n1 = node('n1');
    const listener = startInNetns(n1.netns, ['/usr/bin/python3', listen, '8472', 'never', '20']);
    await listener.waitFor(/listening/);
    await sendGood(n1, 1);
    await listener.waitFor(/twill-probe:good/);
    listener.kill();
  });

  it("removes a kernel node's flannel.1 with its entries, both masquerade chains and its files, and keeps a plugin twill did not write", async () => {
    const n3 = node('n3');
    await bounceAgent(lab, n3, 'SIGTERM', ['--ip-masq']);
    expect(await iptablesSave(n3)).toContain(':FLANNEL-POSTRTG');
    await stopAgent(n3.agent!.pid, n3.pinDir);
    const d = hostDirs(n3);
    mkdirSync(d.bin, { recursive: true });
    cpSync('/usr/lib/cni/bridge', path.join(d.bin, 'flannel'));
    expect((await run(['ip', '-n', n3.netns, 'route', 'show', 'dev', 'flannel.1'])).stdout).toContain('onlink');

    const { code, report } = await uninstall(lab, n3);
    expect(code).toBe(0);
    expect(await hasDevice(n3, 'flannel.1')).toBe(false);
    expect((await run(['ip', '-n', n3.netns, 'route'])).stdout).not.toContain('flannel.1');
    expect(await iptablesSave(n3)).not.toContain('FLANNEL');
    for (const p of [choiceRecordPath(n3.pinDir), n3.subnetFile]) expect(existsSync(p), p).toBe(false);
    expect(existsSync(path.join(d.bin, 'flannel'))).toBe(true);
    expect(report.removed).toEqual(
      expect.arrayContaining([
        'device flannel.1 and its neighbour, FDB and route entries',
        'iptables nat FLANNEL-POSTRTG and its jump',
        'iptables filter FLANNEL-FWD and its jump',
        `${n3.subnetFile} (subnet file)`,
      ]),
    );
    expect(report.kept).toEqual([{ name: path.join(d.bin, 'flannel'), why: "not a plugin twill wrote (flannel's own?)" }]);
    expect((await uninstall(lab, n3)).report.removed).toEqual([]);
  });
});

describe('uninstall on a kernel host-gw node', () => {
  const LAB = 'tu3';
  let lab: LabState;
  beforeAll(async () => {
    lab = await labUpFresh(LAB, ['--nodes', '2', '--kernel-nodes', '1', '--backend', 'host-gw', '--pods-per-node', '1', '--underlay', '192.168.113.0/24']);
  }, 180_000);
  afterAll(async () => {
    await twill(['lab', 'down', '--name', LAB]);
  }, 60_000);

  it("removes flannel's route to each peer, found with the network the subnet file names", async () => {
    const [n1, n2] = lab.nodes;
    const route = `${n1.subnet} via ${n1.underlayIp}`;
    expect((await run(['ip', '-n', n2.netns, 'route', 'show', n1.subnet])).stdout).toContain(`${route} dev eth0`);
    await stopAgent(n2.agent!.pid, n2.pinDir);
    const dry = await uninstall(lab, n2, ['--keep-flannel', '--dry-run']);
    expect(dry.report.kept).toContainEqual({ name: `routes ${route}`, why: 'kept for flanneld (--keep-flannel)' });
    const { code, report } = await uninstall(lab, n2);
    expect(code).toBe(0);
    expect(report.removed).toContain(`route ${route}`);
    expect((await run(['ip', '-n', n2.netns, 'route', 'show', n1.subnet])).stdout).toBe('');
    expect((await uninstall(lab, n2)).report.removed).toEqual([]);
  });
});

describe('uninstall on dual-stack nodes (after the host-gw lab, on its underlay)', () => {
  const LAB = 'tu4';
  let lab: LabState;
  beforeAll(async () => {
    lab = await labUpFresh(LAB, ['--nodes', '2', '--kernel-nodes', '1', '--ip-family', 'dual', '--pods-per-node', '1', '--underlay', '192.168.113.0/24']);
  }, 180_000);
  afterAll(async () => {
    await twill(['lab', 'down', '--name', LAB]);
  }, 60_000);

  it('removes flannel-v6.1 and the ip6tables chains from a kernel node, and the IPv6 route with twill0 from a BPF node', async () => {
    const [n1, n2] = lab.nodes;
    await bounceAgent(lab, n2, 'SIGTERM', ['--ip-masq']);
    expect((await run(['ip6tables-save'], { netns: n2.netns })).stdout).toContain(':FLANNEL-POSTRTG');
    for (const n of lab.nodes) await stopAgent(n.agent!.pid, n.pinDir);
    const kernel = await uninstall(lab, n2);
    expect(kernel.code).toBe(0);
    expect(kernel.report.removed).toEqual(
      expect.arrayContaining([
        'device flannel.1 and its neighbour, FDB and route entries',
        'device flannel-v6.1 and its neighbour, FDB and route entries',
        'ip6tables nat FLANNEL-POSTRTG and its jump',
        'ip6tables filter FLANNEL-FWD and its jump',
      ]),
    );
    expect(await hasDevice(n2, 'flannel-v6.1')).toBe(false);
    expect((await run(['ip6tables-save'], { netns: n2.netns })).stdout).not.toContain('FLANNEL');

    expect((await run(['ip', '-n', n1.netns, '-6', 'route'])).stdout).toContain('dev twill0');
    const bpf = await uninstall(lab, n1);
    expect(bpf.code).toBe(0);
    expect(bpf.report.removed).toContain('device twill0');
    expect((await run(['ip', '-n', n1.netns, '-6', 'route'])).stdout).not.toContain('twill0');
    expect(existsSync(n1.pinDir)).toBe(false);
    for (const n of lab.nodes) expect((await uninstall(lab, n)).report.removed).toEqual([]);
  });
});
