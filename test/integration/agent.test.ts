import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isAgent, pidAlive, stopAgent } from '../../controller/lab/agents.js';
import { startLabEtcd, stopLabEtcd } from '../../controller/lab/etcd-cluster.js';
import { restartAgent } from '../../controller/lab/node-daemons.js';
import { labStatus, type LabNode, type LabState } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs, cliPath } from '../support/build.js';
import { startInNetns, stopAll } from '../support/proc.js';
import { bounceAgent, expectNoLoss, labUpFresh, startPingFlow, stopPingFlows, until } from '../support/lab-session.js';

/*
 * twill agent against a real etcd in the lab: 3 nodes, one pod each, lab name "twa".
 * etcd is driven with etcdctl from its own namespace, maps are read through their pins.
 */
const LAB = 'twa';
const PREFIX = '/coreos.com/network';
const twill = (args: string[], netns?: string) => run([process.execPath, cliPath, ...args], { netns, allowFailure: true });
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;
const etcdctl = (...args: string[]) =>
  run(['etcdctl', '--endpoints', lab.etcd!.endpoint, ...args], { netns: lab.etcd!.netns, env: { ...process.env, ETCDCTL_API: '3' } });
const key = (subnet: string) => `${PREFIX}/subnets/${subnet.replace('/', '-')}`;
const log = (n: LabNode) => readFileSync(n.agent!.log, 'utf8');

interface MapsDoc {
  config: unknown;
  subnets: { subnet: string; publicIp: string; vtepMac: string }[];
  peers: unknown[];
}
async function maps(n: LabNode): Promise<MapsDoc> {
  const doc = JSON.parse((await twill(['maps', '--pin-dir', n.pinDir, '--json'])).stdout) as MapsDoc;
  // Without the counters: they move with traffic; the entries must not.
  return { config: doc.config, subnets: doc.subnets, peers: doc.peers };
}
/** etcdctl prints 64-bit lease ids as JSON numbers, which JSON.parse would round: read the digits. */
function leaseIdHex(etcdctlJson: string): string {
  return BigInt(/"lease":(\d+)/.exec(etcdctlJson)![1]).toString(16);
}
const hasSubnet = async (n: LabNode, subnet: string, mac?: string) => (await maps(n)).subnets.some((s) => s.subnet === subnet && (!mac || s.vtepMac === mac));
const ping = (from: string, to: string) => run(['ping', '-c', '1', '-W', '2', to], { netns: from, allowFailure: true });
const fakeLease = (ip: string, mac: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } });

beforeAll(async () => {
  buildBpf();
  buildTs();
  lab = await labUpFresh(LAB, ['--nodes', '3', '--pods-per-node', '1']);
}, 120_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
}, 120_000);

describe('twill agent with a real etcd', () => {
  it('holds one lease per node in etcd, in flannel format, bound to an etcd lease', async () => {
    const out = JSON.parse((await etcdctl('get', '--prefix', `${PREFIX}/subnets/`, '-w', 'json')).stdout) as {
      kvs: { key: string; value: string; lease?: number }[];
    };
    expect(out.kvs).toHaveLength(3);
    for (const kv of out.kvs) {
      const value = JSON.parse(Buffer.from(kv.value, 'base64').toString());
      expect(Object.keys(value)).toEqual(['PublicIP', 'PublicIPv6', 'BackendType', 'BackendData']);
      expect(value.BackendType).toBe('vxlan');
      expect(kv.lease).toBeGreaterThan(0);
    }
    for (const n of lab.nodes) expect((await maps(n)).subnets).toHaveLength(2);
  });

  it.each([
    ['dual stack with host-gw', '{"Network":"10.251.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}', []],
    ['IPv6 only on bpf', '{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}', ['--dataplane=bpf']],
  ])(
    'an IPv6 network (%s) on a node whose interface has no IPv6 address: the agent names what is missing and exits before taking a lease',
    async (name, config, extra) => {
      const prefix = `/twill-test/ipv6-${name.replaceAll(' ', '-')}`;
      await etcdctl('put', `${prefix}/config`, config);
      const pinDir = '/sys/fs/bpf/twill-lab/twa-ipv6';
      const res = await twill(
        [
          'agent',
          `--etcd-endpoints=${lab.etcd!.endpoint}`,
          `--etcd-prefix=${prefix}`,
          '--iface=eth0',
          `--pin-dir=${pinDir}`,
          '--subnet-file=/run/twill/lab/twa/ipv6.env',
          ...extra,
        ],
        node('n1').netns,
      );
      expect(res.code).toBe(1);
      expect(res.stderr).toContain("has no global IPv6 address, which the network config's EnableIPv6 needs");
      expect(existsSync(pinDir)).toBe(false);
      expect((await etcdctl('get', '--prefix', '--keys-only', `${prefix}/subnets`)).stdout.trim()).toBe('');
    },
  );

  it('rejects a wrong flag value with a message naming it', async () => {
    const res = await twill(['agent', '--subnet-lease-renew-margin', '0']);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/--subnet-lease-renew-margin 0: must be between 1 and 1439/);
  });

  it.each([
    ['{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}', 'SubnetLen 31: must be <= 30'],
    ['{"Network":"10.244.0.0/16"', 'not valid JSON'],
    [undefined, 'no network config at /bad/'],
  ])('waits out an invalid or missing config %s, saying what is wrong, and writes nothing', async (config, message) => {
    const prefix = `/bad/${Date.now()}`;
    if (config !== undefined) await etcdctl('put', `${prefix}/config`, config);
    const n1 = node('n1');
    const subnetFile = `/run/twill/lab/${LAB}/bad-subnet.env`;
    const agent = startInNetns(n1.netns, [
      process.execPath,
      cliPath,
      'agent',
      `--etcd-endpoints=${lab.etcd!.endpoint}`,
      `--etcd-prefix=${prefix}`,
      '--iface=eth0',
      `--pin-dir=/sys/fs/bpf/twill-lab/${LAB}-bad`,
      `--subnet-file=${subnetFile}`,
    ]);
    await agent.waitFor(/waiting for a usable network config/);
    agent.kill('SIGKILL');
    await agent.exited;
    expect(agent.output()).toContain(message);
    expect((await etcdctl('get', '--prefix', `${prefix}/subnets/`, '--keys-only')).stdout.trim()).toBe('');
    expect(existsSync(subnetFile)).toBe(false);
  });

  it('survives kill -9 during traffic: no packet lost, the restart reuses the subnet and rewrites no map entry', async () => {
    const n1 = node('n1');
    const before = await maps(n1);
    const flow = startPingFlow(pod('n2-p1'), pod('n1-p1').ip, 'n1');
    await flow.waitFor(/^first reply$/m);
    await stopAgent(n1.agent!.pid, n1.pinDir, 'SIGKILL');
    const logLength = log(n1).length;
    const agent = restartAgent(lab, n1);
    await until('the restarted agent to be ready', async () => log(n1).slice(logLength).includes('"msg":"ready"'));
    expectNoLoss(await stopPingFlows([flow], { lastFault: Date.now() }));
    const restartLog = log(n1).slice(logLength);
    expect(restartLog).toMatch(/"msg":"reusing our lease","subnet":"10\.244\.\d+\.0\/24"/);
    expect(restartLog).toContain(`"lease":"${n1.subnet}"`);
    expect(restartLog).toContain(`"swapped":{"encap":true,"decap":true}`);
    expect(restartLog).not.toContain('datapath updated'); // the maps were already right: nothing rewritten
    expect(await maps(n1)).toEqual(before);
    expect(isAgent(agent.pid, n1.pinDir)).toBe(true);
  });

  it('a VtepMAC change in a lease reaches the other nodes', async () => {
    const n2 = node('n2');
    const raw = (await etcdctl('get', key(n2.subnet), '-w', 'json')).stdout;
    const original = Buffer.from((JSON.parse(raw) as { kvs: { value: string }[] }).kvs[0].value, 'base64').toString();
    const leaseHex = leaseIdHex(raw);
    await etcdctl('put', `--lease=${leaseHex}`, key(n2.subnet), fakeLease(n2.underlayIp, '02:11:22:33:44:55'));
    await until(
      'n1 and n3 to see the new VtepMAC',
      async () => (await hasSubnet(node('n1'), n2.subnet, '02:11:22:33:44:55')) && hasSubnet(node('n3'), n2.subnet, '02:11:22:33:44:55'),
    );
    await etcdctl('put', `--lease=${leaseHex}`, key(n2.subnet), original);
    await until('the original VtepMAC back on n1', () => hasSubnet(node('n1'), n2.subnet, n2.vtepMac));
  });

  it('a lease deleted in etcd leaves every other node, and its owner re-acquires it loudly', async () => {
    const n2 = node('n2');
    const logLength = log(n2).length;
    process.kill(n2.agent!.pid, 'SIGSTOP'); // hold the owner back so the others' removal is observable
    try {
      await etcdctl('del', key(n2.subnet));
      await until('n2 gone from n1 and n3', async () => !(await hasSubnet(node('n1'), n2.subnet)) && !(await hasSubnet(node('n3'), n2.subnet)));
    } finally {
      process.kill(n2.agent!.pid, 'SIGCONT');
    }
    await until('n2 back on n1 and n3', async () => (await hasSubnet(node('n1'), n2.subnet)) && hasSubnet(node('n3'), n2.subnet));
    const after = log(n2).slice(logLength);
    expect(after).toMatch(/"level":"error".*our subnet lease is gone from etcd: re-acquiring/);
    expect(after).toMatch(/lease re-acquired/);
    expect((await ping(pod('n1-p1').netns, pod('n2-p1').ip)).code).toBe(0);
  });

  it('resyncs when etcd compacts past its watch revision, and misses no delete', async () => {
    const n1 = node('n1');
    const fake = '10.244.240.0/24';
    await etcdctl('put', key(fake), fakeLease('192.168.77.99', '02:00:00:00:00:99'));
    await until('the fake lease on n1', () => hasSubnet(n1, fake));
    const ns = lab.etcd!.netns;
    const block = ['INPUT', '-p', 'tcp', '-s', n1.underlayIp, '--dport', '2379', '-j', 'REJECT', '--reject-with', 'tcp-reset'];
    await run(['iptables', '-I', ...block], { netns: ns });
    try {
      // Cut n1's connection, then change and compact etcd while it cannot reconnect.
      await run(['ss', '-K', 'dst', n1.underlayIp], { netns: ns });
      await etcdctl('del', key(fake));
      const rev = JSON.parse((await etcdctl('get', 'x', '-w', 'json')).stdout).header.revision;
      await etcdctl('compact', String(rev));
      expect(await hasSubnet(n1, fake)).toBe(true); // n1 has not heard of the delete
    } finally {
      await run(['iptables', '-D', ...block], { netns: ns });
    }
    await until('n1 to drop the deleted lease after resync', async () => !(await hasSubnet(n1, fake)), 30_000);
    expect(log(n1)).toMatch(/lease watch (reconnected|ended), resyncing/);
  });

  it('keeps forwarding while etcd is down, and recovers when it returns', async () => {
    const before = await maps(node('n3'));
    await stopLabEtcd(lab);
    try {
      await new Promise((r) => setTimeout(r, 2000));
      expect((await ping(pod('n3-p1').netns, pod('n1-p1').ip)).code).toBe(0);
      expect(await maps(node('n3'))).toEqual(before);
      for (const n of lab.nodes) expect(isAgent(n.agent!.pid, n.pinDir)).toBe(true);
      // Told to stop while etcd is unreachable, an agent still exits, and its datapath stays.
      process.kill(node('n3').agent!.pid, 'SIGTERM');
      await until('n3 agent to exit on SIGTERM with etcd down', async () => !pidAlive(node('n3').agent!.pid), 20_000);
      expect((await ping(pod('n1-p1').netns, pod('n3-p1').ip)).code).toBe(0);
    } finally {
      await startLabEtcd(lab);
    }
    await bounceAgent(lab, node('n3'), 'SIGTERM');
    const fake = '10.244.241.0/24';
    await etcdctl('put', key(fake), fakeLease('192.168.77.98', '02:00:00:00:00:98'));
    await until(
      'every agent to see a lease put after etcd returned',
      async () => (await hasSubnet(node('n1'), fake)) && (await hasSubnet(node('n2'), fake)) && hasSubnet(node('n3'), fake),
      30_000,
    );
    await etcdctl('del', key(fake));
  });

  it('ignores leases of other backends and unparsable records, with a warning, and keeps working', async () => {
    const n1 = node('n1');
    const before = await maps(n1);
    const logLength = log(n1).length;
    await etcdctl('put', key('10.244.242.0/24'), JSON.stringify({ PublicIP: '192.168.77.97', BackendType: 'host-gw', BackendData: null }));
    await etcdctl('put', `${PREFIX}/subnets/not-a-subnet`, '{}');
    await etcdctl('put', key('10.244.243.0/24'), '{"PublicIP": 42');
    await until('warnings for all three', async () => {
      const l = log(n1).slice(logLength);
      return l.includes('backend type \\"host-gw\\" is not vxlan') && l.includes('not a subnet key') && l.includes('value is not JSON');
    });
    expect(await maps(n1)).toEqual(before);
    for (const k of [key('10.244.242.0/24'), `${PREFIX}/subnets/not-a-subnet`, key('10.244.243.0/24')]) await etcdctl('del', k);
    expect((await ping(pod('n1-p1').netns, pod('n2-p1').ip)).code).toBe(0);
  });

  it('renews its lease before expiry', async () => {
    const n2 = node('n2');
    await stopAgent(n2.agent!.pid, n2.pinDir);
    const logLength = log(n2).length;
    // A 10 s TTL: renewal is due after 5 s (the margin is capped at half the TTL).
    restartAgent(lab, n2, ['--subnet-lease-ttl=10']);
    await until(
      'the agent to renew twice',
      async () =>
        (log(n2)
          .slice(logLength)
          .match(/"msg":"lease renewed"/g)?.length ?? 0) >= 2,
      30_000,
    );
    const raw = (await etcdctl('get', key(n2.subnet), '-w', 'json')).stdout;
    const ttl = JSON.parse((await etcdctl('lease', 'timetolive', leaseIdHex(raw), '-w', 'json')).stdout) as { ttl: number };
    expect(ttl.ttl).toBeGreaterThan(0); // 15+ s after a 10 s grant: alive only through renewal
    expect(await hasSubnet(node('n1'), n2.subnet)).toBe(true);
  }, 40_000);

  it('keeps a reservation a reservation', async () => {
    const n3 = node('n3');
    await stopAgent(n3.agent!.pid, n3.pinDir);
    // SIGTERM leaves the datapath in place: n3 keeps forwarding with no agent.
    expect(isAgent(n3.agent!.pid, n3.pinDir)).toBe(false);
    expect((await ping(pod('n1-p1').netns, pod('n3-p1').ip)).code).toBe(0);
    await etcdctl('del', key(n3.subnet));
    const reserved = '10.244.250.0/24';
    await etcdctl('put', key(reserved), fakeLease(n3.underlayIp, n3.vtepMac));
    const logLength = log(n3).length;
    restartAgent(lab, n3);
    await until('n3 ready on its reservation', async () => log(n3).slice(logLength).includes('"msg":"ready"'));
    expect(log(n3).slice(logLength)).toContain('"msg":"using our reservation"');
    expect(readFileSync(n3.subnetFile, 'utf8')).toContain('FLANNEL_SUBNET=10.244.250.1/24');
    const kv = JSON.parse((await etcdctl('get', key(reserved), '-w', 'json')).stdout).kvs[0];
    expect(kv.lease ?? 0).toBe(0); // still no TTL
    await until('n1 to route the reserved subnet to n3', () => hasSubnet(node('n1'), reserved));
  });
});

describe('many agents at once', () => {
  const MANY = 'twm';
  afterAll(async () => {
    await twill(['lab', 'down', '--name', MANY]);
  }, 120_000);

  it('10 agents started together get 10 distinct subnets', async () => {
    const up = await twill(['lab', 'up', '--name', MANY, '--nodes', '10', '--pods-per-node', '0', '--underlay', '192.168.78.0/24']);
    expect(up.code, up.stderr).toBe(0);
    const state = (await labStatus(MANY))!;
    const subnets = state.nodes.map((n) => n.subnet);
    expect(new Set(subnets).size).toBe(10);
    for (const n of state.nodes) expect(readFileSync(n.agent!.log, 'utf8')).not.toMatch(/"level":"error"/);
  }, 120_000);
});
