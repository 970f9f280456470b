import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, cliPath } from '../support/build.js';

/* The lab's command line: options, status output, subnet files, teardown. Lab name "twc". */
const LAB = 'twc';
const twill = (args: string[]) => run([process.execPath, cliPath, ...args], { allowFailure: true });
const namespaces = async () =>
  (await run(['ip', 'netns', 'list'])).stdout
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${LAB}-`));

beforeAll(() => {
  buildBpf();
  buildTs();
});
afterAll(async () => {
  await twill(['lab', 'down', '--name', LAB]);
}, 60_000);

describe('twill lab', () => {
  it.each([
    [['--nodes', '0'], /--nodes: Too small: expected number to be >=1/],
    [['--nodes', 'three'], /--nodes three: expected a number/],
    [['--network', '10.244.0.0'], /--network: an IPv4 CIDR/],
    [['--underlay', '192.168.0.0/16'], /--underlay: a \/24/],
    [['--name', 'Bad-Name'], /--name: 1-6 lowercase letters/],
    [['--nodes', '300'], /--nodes: Too big/],
    [['--network', '10.244.0.0/23', '--nodes', '3'], /--nodes 3: network 10.244.0.0\/23 holds only 1 \/24 subnets/],
    [['--bogus'], /unknown flag --bogus/],
  ])('rejects %j naming the option, and creates nothing', async (args, message) => {
    const res = await twill(['lab', 'up', '--name', LAB, ...args]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(message);
    expect(await namespaces()).toEqual([]);
  });

  it('comes up with etcd, 2 agent-run nodes and pods on their leases, all in status --json', async () => {
    const up = await twill(['lab', 'up', '--name', LAB, '--nodes', '2', '--pods-per-node', '1']);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stderr).toMatch(/\[\d+\/\d+\] node n2: agent ready, lease 10\.244\.\d+\.0\/24/);
    const status = JSON.parse((await twill(['lab', 'status', '--name', LAB, '--json'])).stdout);
    expect(status.underlay).toEqual({ netns: `${LAB}-ul`, bridge: 'br0', cidr: '192.168.77.0/24', gateway: '192.168.77.254' });
    expect(status.etcd).toMatchObject({ netns: `${LAB}-etcd`, endpoint: 'http://192.168.77.250:2379', prefix: '/coreos.com/network' });
    expect(status.nodes).toHaveLength(2);
    const [n1, n2] = status.nodes;
    expect(n2).toMatchObject({ name: 'n2', netns: `${LAB}-n2`, underlayIp: '192.168.77.2', pinDir: `/sys/fs/bpf/twill-lab/${LAB}-n2` });
    expect(n2.agent).toMatchObject({ healthz: '192.168.77.2:8471' });
    expect(n2.agent.pid).toBeGreaterThan(1);
    for (const n of [n1, n2]) expect(n.subnet).toMatch(/^10\.244\.\d+\.0\/24$/);
    expect(n1.subnet).not.toBe(n2.subnet);
    expect(n2.vtepMac).toMatch(/^[0-9a-f][26ae](:[0-9a-f]{2}){5}$/); // unicast, locally administered
    const firstPodIp = (subnet: string) => subnet.replace(/0\/24$/, '2');
    expect(status.pods).toEqual([
      { name: 'n1-p1', netns: `${LAB}-n1-p1`, ip: firstPodIp(n1.subnet), ips: [firstPodIp(n1.subnet)], node: 'n1' },
      { name: 'n2-p1', netns: `${LAB}-n2-p1`, ip: firstPodIp(n2.subnet), ips: [firstPodIp(n2.subnet)], node: 'n2' },
    ]);
    const mtu = (await run(['ip', '-n', `${LAB}-n1-p1`, '-j', 'link', 'show', 'eth0'])).stdout;
    expect(JSON.parse(mtu)[0].mtu).toBe(1450);
    expect(readFileSync(n1.subnetFile, 'utf8')).toBe(
      `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${n1.subnet.replace(/0\/24$/, '1')}/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n`,
    );
    const health = await run(['curl', '-s', `http://${n2.agent.healthz}/readyz`], { netns: n2.netns, allowFailure: true });
    expect(JSON.parse(health.stdout)).toMatchObject({ ready: true, lease: n2.subnet });
    const text = (await twill(['lab', 'status', '--name', LAB])).stdout;
    expect(text).toMatch(/n2-p1 +twc-n2-p1 +10\.244\.\d+\.2 +on n2/);
  });

  it("creates pods through the flannel-compatible CNI plugin, as kubelet would with flannel's conflist", async () => {
    const status = JSON.parse((await twill(['lab', 'status', '--name', LAB, '--json'])).stdout);
    const n1 = status.nodes[0];
    const saved = JSON.parse(readFileSync(`/run/twill/lab/${LAB}/n1/cni-flannel/${LAB}-n1-p1`, 'utf8'));
    expect(saved).toMatchObject({
      type: 'bridge',
      name: 'cbr0',
      isGateway: true,
      mtu: 1450,
      ipam: { type: 'host-local', ranges: [[{ subnet: n1.subnet }]], routes: [{ dst: '10.244.0.0/16' }] },
    });
    const opts = await twill(['docker-opts', '--subnet-file', n1.subnetFile, '-d', '-']);
    expect(opts.stdout).toContain(`DOCKER_OPTS=" --bip=${n1.subnet.replace(/0\/24$/, '1')}/24 --ip-masq=true --mtu=1450"`);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'twill-cni-'));
    try {
      expect((await twill(['cni', 'install', '--dir', dir, '--name', 'flannel'])).code).toBe(0);
      const version = await run([path.join(dir, 'flannel')], { env: { ...process.env, CNI_COMMAND: 'VERSION' } });
      expect(JSON.parse(version.stdout).supportedVersions).toContain('0.4.0');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lab down removes namespaces, pins and state, and a second down is harmless', async () => {
    expect((await twill(['lab', 'down', '--name', LAB])).code).toBe(0);
    expect(await namespaces()).toEqual([]);
    expect(existsSync(`/sys/fs/bpf/twill-lab/${LAB}-n1`)).toBe(false);
    expect(existsSync(`/run/twill/lab/${LAB}`)).toBe(false);
    expect((await run(['pgrep', '-f', `twill-lab/${LAB}-n`], { allowFailure: true })).stdout).toBe(''); // no agent left
    expect((await run(['pgrep', '-f', `lab/${LAB}/etcd`], { allowFailure: true })).stdout).toBe(''); // no etcd left
    expect((await twill(['lab', 'down', '--name', LAB])).code).toBe(0);
    expect((await twill(['lab', 'status', '--name', LAB])).code).toBe(2);
  });
});
