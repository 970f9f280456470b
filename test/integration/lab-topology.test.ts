import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabError } from '../../controller/lab/errors.js';
import { labDown, labUp } from '../../controller/lab/lab.js';
import { labStatePath, labStatus, type LabState } from '../../controller/lab/state.js';
import { cidrContains, parseCidr } from '../../controller/net/ipv4.js';
import { run } from '../../controller/util/exec.js';
import { buildTs } from '../support/build.js';

/*
 * The lab's topology on the real kernel, through the module API: namespaces, underlay, node
 * settings, CNI pods, state file, teardown. Both nodes run flannel's kernel VXLAN (no BPF here:
 * the BPF datapath has its own suite). Lab name "twb".
 */
const LAB = 'twb';
const PIN_ROOT = '/sys/fs/bpf/twill-lab';
let lab: LabState;

const namespaces = async () =>
  (await run(['ip', 'netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${LAB}-`))
    .sort();
const ping = (netns: string, to: string) => run(['ping', '-c1', '-W2', to], { netns, allowFailure: true });
const sysctl = async (netns: string, key: string) => (await run(['sysctl', '-n', key], { netns })).stdout.trim();
const ipj = async <T>(netns: string, args: string[]) => JSON.parse((await run(['ip', '-n', netns, '-j', ...args])).stdout) as T;
type Link = { ifname: string; mtu: number; address: string; operstate: string; flags: string[]; master?: string };
type Addr = { ifname: string; addr_info: { family: string; local: string; prefixlen: number }[] };
const inet = (addrs: Addr[], dev: string) =>
  addrs
    .find((a) => a.ifname === dev)
    ?.addr_info.filter((i) => i.family === 'inet')
    .map((i) => `${i.local}/${i.prefixlen}`) ?? [];

beforeAll(async () => {
  buildTs(); // node agents run from dist/
  await labDown(LAB);
  lab = await labUp({ name: LAB, nodes: 2, kernelNodes: 2, podsPerNode: 2 });
}, 180_000);

afterAll(async () => {
  await labDown(LAB);
}, 120_000);

describe('lab topology (2 nodes x 2 pods)', () => {
  it('the state file and labStatus agree with what labUp returned', async () => {
    const file = JSON.parse(readFileSync(labStatePath(LAB), 'utf8')) as LabState;
    expect(labStatePath(LAB)).toBe(`/run/twill/lab/${LAB}/state.json`);
    expect(await labStatus(LAB)).toEqual(file);
    expect(JSON.parse(JSON.stringify(lab))).toEqual(file);
    expect(file).toMatchObject({ name: LAB, network: '10.244.0.0/16', subnetLen: 24, podMtu: 1450, pinRoot: PIN_ROOT });
    expect(file.underlay).toEqual({ netns: `${LAB}-ul`, bridge: 'br0', cidr: '192.168.77.0/24', gateway: '192.168.77.254' });
    expect(file.nodes.map((n) => [n.name, n.netns, n.iface, n.underlayIp, n.pinDir])).toEqual([
      ['n1', `${LAB}-n1`, 'eth0', '192.168.77.1', `${PIN_ROOT}/${LAB}-n1`],
      ['n2', `${LAB}-n2`, 'eth0', '192.168.77.2', `${PIN_ROOT}/${LAB}-n2`],
    ]);
    expect(file.pods.map((p) => [p.name, p.netns, p.node])).toEqual([
      ['n1-p1', `${LAB}-n1-p1`, 'n1'],
      ['n1-p2', `${LAB}-n1-p2`, 'n1'],
      ['n2-p1', `${LAB}-n2-p1`, 'n2'],
      ['n2-p2', `${LAB}-n2-p2`, 'n2'],
    ]);
    expect(new Set(file.pods.map((p) => p.containerId)).size).toBe(4);
    expect(await namespaces()).toEqual([`${LAB}-etcd`, `${LAB}-n1`, `${LAB}-n1-p1`, `${LAB}-n1-p2`, `${LAB}-n2`, `${LAB}-n2-p1`, `${LAB}-n2-p2`, `${LAB}-ul`]);
  });

  it('the underlay bridge holds the gateway and every node port; the root namespace has none of it', async () => {
    const ul = lab.underlay.netns;
    expect(inet(await ipj<Addr[]>(ul, ['addr', 'show', 'dev', 'br0']), 'br0')).toEqual(['192.168.77.254/24']);
    const ports = (await ipj<Link[]>(ul, ['link', 'show', 'master', 'br0'])).map((l) => l.ifname).sort();
    expect(ports).toEqual(['etcd', 'n1', 'n2']);
    const root = (JSON.parse((await run(['ip', '-j', 'link', 'show'])).stdout) as Link[]).map((l) => l.ifname);
    for (const name of ['br0', 'n1', 'n2', 'etcd']) expect(root).not.toContain(name);
  });

  it('each node: eth0 at MTU 1500 with its MAC in the state, .i/24, default via the gateway, forwarding on, rp_filter off', async () => {
    for (const [i, node] of lab.nodes.entries()) {
      const [eth0] = await ipj<Link[]>(node.netns, ['link', 'show', 'dev', 'eth0']);
      expect(eth0).toMatchObject({ mtu: 1500, address: node.underlayMac, operstate: 'UP' });
      expect(inet(await ipj<Addr[]>(node.netns, ['addr', 'show', 'dev', 'eth0']), 'eth0')).toEqual([`192.168.77.${i + 1}/24`]);
      const routes = await ipj<{ dst: string; gateway?: string; dev: string }[]>(node.netns, ['route', 'show', 'default']);
      expect(routes).toEqual([expect.objectContaining({ dst: 'default', gateway: '192.168.77.254', dev: 'eth0' })]);
      const [lo] = await ipj<Link[]>(node.netns, ['link', 'show', 'dev', 'lo']);
      expect(lo.flags).toContain('UP');
      expect(await sysctl(node.netns, 'net.ipv4.ip_forward')).toBe('1');
      for (const c of ['all', 'default']) expect(await sysctl(node.netns, `net.ipv4.conf.${c}.rp_filter`)).toBe('0');
      expect(node.vtepMac).toMatch(/^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/); // unicast, locally administered
    }
    expect(lab.nodes[0].subnet).not.toBe(lab.nodes[1].subnet);
    expect(lab.nodes[0].vtepMac).not.toBe(lab.nodes[1].vtepMac);
  });

  it("each pod: eth0 at the pod MTU with an address inside its node's subnet, lo up, routes to the network", async () => {
    const network = parseCidr(lab.network)!;
    for (const pod of lab.pods) {
      const node = lab.nodes.find((n) => n.name === pod.node)!;
      const subnet = parseCidr(node.subnet)!;
      expect(cidrContains(network, subnet), `${node.name} subnet ${node.subnet}`).toBe(true);
      expect(cidrContains(subnet, parseCidr(`${pod.ip}/32`)!), `${pod.name} ${pod.ip} in ${node.subnet}`).toBe(true);
      const [eth0] = await ipj<Link[]>(pod.netns, ['link', 'show', 'dev', 'eth0']);
      expect(eth0.mtu, pod.name).toBe(1450);
      expect(inet(await ipj<Addr[]>(pod.netns, ['addr', 'show', 'dev', 'eth0']), 'eth0')).toEqual([`${pod.ip}/24`]);
      const [lo] = await ipj<Link[]>(pod.netns, ['link', 'show', 'dev', 'lo']);
      expect(lo.flags, `${pod.name} lo`).toContain('UP');
      const routes = (await ipj<{ dst: string; gateway?: string }[]>(pod.netns, ['route', 'show'])).map((r) => r.dst);
      expect(routes, pod.name).toContain(lab.network);
    }
    expect(new Set(lab.pods.map((p) => p.ip)).size).toBe(lab.pods.length);
  });

  it('pods on one node ping each other, a node pings its own pods, and the nodes ping each other on the underlay', async () => {
    const failures: string[] = [];
    const check = async (from: string, to: string, what: string) => {
      if ((await ping(from, to)).code !== 0) failures.push(what);
    };
    for (const node of lab.nodes) {
      const [a, b] = lab.pods.filter((p) => p.node === node.name);
      await check(a.netns, b.ip, `${a.name} -> ${b.name}`);
      await check(b.netns, a.ip, `${b.name} -> ${a.name}`);
      for (const p of [a, b]) await check(node.netns, p.ip, `${node.name} -> ${p.name}`);
      await check(node.netns, lab.underlay.gateway, `${node.name} -> gateway`);
    }
    await check(lab.nodes[0].netns, lab.nodes[1].underlayIp, 'n1 -> n2 underlay');
    await check(lab.nodes[1].netns, lab.nodes[0].underlayIp, 'n2 -> n1 underlay');
    expect(failures).toEqual([]);
  });

  it("writes each node's subnet.env in flannel's format: the first usable address of the node subnet", () => {
    for (const node of lab.nodes) {
      expect(node.subnetFile).toBe(`/run/twill/lab/${LAB}/${node.name}/subnet.env`);
      const first = node.subnet.replace(/\.0\/24$/, '.1/24');
      expect(readFileSync(node.subnetFile, 'utf8')).toBe(`FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${first}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`);
    }
  });

  it.each([
    [{ nodes: 0 }, /--nodes/],
    [{ nodes: 2, network: '10.244.0.0' }, /--network/],
    [{ nodes: 2, network: '300.244.0.0/16' }, /--network/],
    [{ nodes: 2, network: '10.244.1.0/16' }, /--network/],
    [{ nodes: 2, underlayCidr: '192.168.77.0/16' }, /--underlay/],
    [{ nodes: 2, underlayCidr: '192.168.777.0/24' }, /--underlay/],
    [{ nodes: 2, subnetLen: 16 }, /--subnet-len/],
    [{ nodes: 2, podsPerNode: -1 }, /--pods-per-node/],
    [{ nodes: 2, mtu: 600 }, /--mtu/],
    [{ nodes: 2, pinRoot: '/tmp/pins' }, /--pin-root/],
    [{ nodes: 1.5 }, /--nodes/],
  ])('rejects %j naming the option, and leaves the running lab alone', async (bad, message) => {
    const before = await namespaces();
    await expect(labUp({ name: LAB, kernelNodes: 0, ...bad })).rejects.toThrow(message);
    await expect(labUp({ name: LAB, kernelNodes: 0, ...bad })).rejects.toBeInstanceOf(LabError);
    expect(await namespaces()).toEqual(before);
    expect(existsSync(labStatePath(LAB))).toBe(true);
  });
});

describe('lab teardown', () => {
  it('labDown removes every namespace, the pins and the state; a second labDown is harmless', async () => {
    await labDown(LAB);
    expect(await namespaces()).toEqual([]);
    expect(existsSync(`/run/twill/lab/${LAB}`)).toBe(false);
    for (const n of ['n1', 'n2']) expect(existsSync(`${PIN_ROOT}/${LAB}-${n}`)).toBe(false);
    expect(await labStatus(LAB)).toBeUndefined();
    expect((await run(['pgrep', '-f', `lab/${LAB}/`], { allowFailure: true })).stdout).toBe(''); // no agent nor etcd left
    await expect(labDown(LAB)).resolves.toBeUndefined();
  });

  it('labDown removes a half-made lab that has no state file', async () => {
    // What an `up` interrupted early leaves behind: namespaces, a veth into the underlay, a pin dir, a state dir.
    for (const ns of [`${LAB}-ul`, `${LAB}-n1`, `${LAB}-n1-p1`]) await run(['ip', 'netns', 'add', ns]);
    await run(['ip', 'link', 'add', 'eth0', 'netns', `${LAB}-n1`, 'type', 'veth', 'peer', 'name', 'n1', 'netns', `${LAB}-ul`]);
    mkdirSync(`${PIN_ROOT}/${LAB}-n1`, { recursive: true });
    mkdirSync(`/run/twill/lab/${LAB}/n1/ipam`, { recursive: true });
    expect(await namespaces()).toHaveLength(3);
    await labDown(LAB);
    expect(await namespaces()).toEqual([]);
    expect(existsSync(`${PIN_ROOT}/${LAB}-n1`)).toBe(false);
    expect(existsSync(`/run/twill/lab/${LAB}`)).toBe(false);
  });
});
