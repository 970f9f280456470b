import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flanneld, mkDockerOpts } from '../../controller/lab/peers.js';
import { hostAddress, parseCidr } from '../../controller/net/ipv4.js';
import { hostAddress6, parseCidr6 } from '../../controller/net/ipv6.js';
import { encodeLeaseValue, subnetKey } from '../../controller/subnet/lease.js';
import { run } from '../../controller/util/exec.js';
import { twillBin } from '../../controller/util/paths.js';
import { stopAll } from '../support/proc.js';
import { createParityNode, describeOutcome, PREFIX, type Outcome, type ParityNode } from '../support/flannel-parity.js';

/*
 * The same inputs give the same outputs, checked against the real programs: flanneld v0.28.10
 * and flannel's dist/mk-docker-opts.sh, as scripts/peers/build.sh built and copied them. Nothing
 * stands in for them: when they are not built, the suite fails naming them (peers.ts).
 */

const NODE = 'tpar-node';
const DOCKER_NS = 'tpar-dock';
const ADDRESS = '192.168.131.2';
const ADDRESS6 = 'fd00:131::2';

let node: ParityNode;
/** Subnet files flanneld wrote in parts 1 and 3, for part 2 (which runs last): name -> contents. */
const subnetFiles = new Map<string, string>();

beforeAll(async () => {
  // Fails here, naming the module and version, when set-up did not build them.
  flanneld();
  mkDockerOpts();
  node = await createParityNode(NODE, ADDRESS, ADDRESS6);
}, 60_000);

afterAll(async () => {
  await stopAll();
  await node?.destroy();
  await run(['ip', 'netns', 'del', DOCKER_NS], { allowFailure: true });
}, 60_000);

/** A subnet key with no etcd lease whose PublicIP is the node's: both programs take it as theirs. */
async function reserve(subnet: string, subnet6: string | undefined, backendType: 'vxlan' | 'host-gw'): Promise<void> {
  const key = subnetKey(parseCidr(subnet)!, subnet6 ? parseCidr6(subnet6) : undefined);
  const value = encodeLeaseValue(
    backendType === 'vxlan'
      ? { backendType, publicIp: ADDRESS, publicIpv6: subnet6 ? ADDRESS6 : undefined, vni: 1 }
      : { backendType, publicIp: ADDRESS, publicIpv6: subnet6 ? ADDRESS6 : undefined },
  );
  await node.etcdctl('put', `${PREFIX}/subnets/${key}`, '--', value);
}

const accepted = (o: Outcome): string => {
  if (o.kind !== 'accepts') throw new Error(`expected a subnet file, got: ${describeOutcome(o)}`);
  return o.file;
};

describe('1. subnet.env, byte for byte, for the same config and lease', () => {
  const cases: { name: string; config: string; flags?: string[]; mtu?: number; subnet: string; subnet6?: string; backend: 'vxlan' | 'host-gw' }[] = [
    { name: 'vxlan', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', subnet: '10.244.57.0/24', backend: 'vxlan' },
    {
      name: 'vxlan --ip-masq',
      config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}',
      flags: ['--ip-masq'],
      subnet: '10.244.57.0/24',
      backend: 'vxlan',
    },
    { name: 'host-gw', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', subnet: '10.244.58.0/24', backend: 'host-gw' },
    {
      name: 'host-gw --ip-masq',
      config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}',
      flags: ['--ip-masq'],
      subnet: '10.244.58.0/24',
      backend: 'host-gw',
    },
    { name: 'vxlan Backend.MTU 1400', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}', subnet: '10.244.59.0/24', backend: 'vxlan' },
    {
      name: 'vxlan underlay MTU 9000',
      config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}',
      mtu: 9000,
      subnet: '10.244.60.0/24',
      backend: 'vxlan',
    },
    {
      name: 'host-gw underlay MTU 9000 --ip-masq',
      config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}',
      mtu: 9000,
      flags: ['--ip-masq'],
      subnet: '10.244.60.0/24',
      backend: 'host-gw',
    },
    {
      name: 'vxlan /26 subnets of a /20',
      config: '{"Network":"10.50.16.0/20","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":7}}',
      subnet: '10.50.17.64/26',
      backend: 'vxlan',
    },
    {
      name: 'dual-stack vxlan',
      config: '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10:244::/56","Backend":{"Type":"vxlan"}}',
      subnet: '10.244.61.0/24',
      subnet6: 'fd10:244:0:3d::/64',
      backend: 'vxlan',
    },
    {
      name: 'dual-stack host-gw --ip-masq',
      config: '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10:244::/56","Backend":{"Type":"host-gw"}}',
      flags: ['--ip-masq'],
      subnet: '10.244.62.0/24',
      subnet6: 'fd10:244:0:3e::/64',
      backend: 'host-gw',
    },
  ];

  it("no lease in etcd: both take the subnet the file names from a previous run (flannel's previousSubnet)", async () => {
    const config = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd10:244::/56","Backend":{"Type":"vxlan"}}';
    // FLANNEL_MTU=1 tells the hint from what either program writes.
    const hint =
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.99.1/24\nFLANNEL_IPV6_NETWORK=fd10:244::/56\nFLANNEL_IPV6_SUBNET=fd10:244:0:63::1/64\nFLANNEL_MTU=1\nFLANNEL_IPMASQ=false\n';
    await node.setMtu(1500);
    await node.reset(config);
    const fromFlanneld = accepted(await node.flanneld([], hint));
    await node.reset(config); // flanneld's lease gone: twill must find the subnet in the file too
    const fromTwill = accepted(await node.twill([], hint));
    console.log(`PARITY-SUBNET hint: ${JSON.stringify(fromFlanneld)}`);
    expect(fromFlanneld).toBe(hint.replace('FLANNEL_MTU=1\n', 'FLANNEL_MTU=1450\n'));
    expect(fromTwill).toBe(fromFlanneld);
  }, 60_000);

  it.each(cases)(
    '$name',
    async (c) => {
      await node.setMtu(c.mtu ?? 1500);
      await node.reset(c.config);
      await reserve(c.subnet, c.subnet6, c.backend);
      const fromFlanneld = accepted(await node.flanneld(c.flags));
      const fromTwill = accepted(await node.twill(c.flags));
      subnetFiles.set(c.name, fromFlanneld);
      console.log(`PARITY-SUBNET ${c.name}: ${JSON.stringify(fromFlanneld)}`);
      // Both took the reservation: the file names its first address.
      const reserved = parseCidr(c.subnet)!;
      expect(fromFlanneld).toContain(`FLANNEL_SUBNET=${hostAddress(reserved, 1)}/${reserved.len}\n`);
      if (c.subnet6) expect(fromFlanneld).toContain(`FLANNEL_IPV6_SUBNET=${hostAddress6(parseCidr6(c.subnet6)!, 1)}/64\n`);
      expect(fromTwill).toBe(fromFlanneld);
    },
    60_000,
  );
});

/**
 * One network config, started against by flanneld and then by twill. `field`: what twill's refusal
 * must name. `differs`: a deliberate difference, with twill's outcome and why.
 */
interface ConfigRow {
  name: string;
  config: string;
  field?: RegExp;
  flags?: string[];
  /** both `accepts` with `files`: both run, but write different subnet files, each matching its pattern */
  differs?: { flanneld: Outcome['kind']; twill: Outcome['kind']; files?: { flanneld: RegExp; twill: RegExp }; reason: string };
}

const vx = (extra: Record<string, unknown> = {}, backend: Record<string, unknown> = {}) =>
  JSON.stringify({ Network: '10.244.0.0/16', ...extra, Backend: { Type: 'vxlan', ...backend } });
const NOT_IMPLEMENTED = 'a flannel backend or option twill does not implement: twill exits naming it, where flanneld runs it';

const rows: ConfigRow[] = [
  // valid
  { name: 'vxlan, defaults', config: vx() },
  { name: 'host-gw', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}' },
  { name: 'SubnetLen 20', config: vx({ SubnetLen: 20 }) },
  { name: '/26 Network, no SubnetLen (/28 each)', config: JSON.stringify({ Network: '10.10.0.0/26', Backend: { Type: 'vxlan' } }) },
  { name: '/28 Network, no SubnetLen (/30 each)', config: JSON.stringify({ Network: '10.10.0.0/28', Backend: { Type: 'vxlan' } }) },
  { name: 'SubnetLen 30 in a /28', config: JSON.stringify({ Network: '10.10.0.0/28', SubnetLen: 30, Backend: { Type: 'vxlan' } }) },
  { name: 'SubnetMin and SubnetMax', config: vx({ SubnetMin: '10.244.100.0', SubnetMax: '10.244.110.0' }) },
  { name: 'field names in lower case', config: '{"network":"10.244.0.0/16","subnetlen":24,"backend":{"type":"vxlan","vni":3}}' },
  { name: 'Backend.Type in upper case', config: vx({}, { Type: 'VXLAN' }) },
  { name: 'Network twice, exact name first', config: '{"Network":"10.244.0.0/16","network":"10.50.0.0/16","Backend":{"Type":"vxlan"}}' },
  { name: 'Network twice, exact name last', config: '{"network":"10.50.0.0/16","Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}' },
  { name: 'Backend.Type twice, in two cases', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","type":"host-gw"}}' },
  { name: 'unknown fields ignored', config: vx({ Foo: 1 }, { Bar: 'x' }) },
  { name: 'VNI 4096, Port 4789', config: vx({}, { VNI: 4096, Port: 4789 }) },
  { name: 'VNI 0 (VNI 0, not the default)', config: vx({}, { VNI: 0 }) },
  { name: 'DirectRouting', config: vx({}, { DirectRouting: true }) },
  { name: 'Network with host bits', config: vx({ Network: '10.244.1.0/16' }) },
  // Accepted by both; flanneld then keeps its masquerade and forward rules in nftables, twill in iptables (not compared here).
  { name: 'EnableNFTables', config: vx({ EnableNFTables: true }) },
  { name: 'dual stack', config: vx({ EnableIPv6: true, IPv6Network: 'fd10:244::/56' }) },
  { name: 'IPv6 only', config: JSON.stringify({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd10:244::/56', Backend: { Type: 'vxlan' } }) },
  {
    name: 'IPv6 only, IPv6SubnetLen 80',
    config: JSON.stringify({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd10:244::/56', IPv6SubnetLen: 80, Backend: { Type: 'vxlan' } }),
  },
  // flannel backends and options twill does not implement
  {
    name: 'udp backend',
    config: vx({}, { Type: 'udp' }),
    field: /Backend\.Type "udp"/,
    differs: { flanneld: 'accepts', twill: 'exits', reason: NOT_IMPLEMENTED },
  },
  {
    name: 'no Backend (udp)',
    config: '{"Network":"10.244.0.0/16"}',
    field: /Backend\.Type missing/,
    differs: { flanneld: 'accepts', twill: 'exits', reason: NOT_IMPLEMENTED },
  },
  { name: 'vxlan GBP', config: vx({}, { GBP: true }), field: /Backend\.GBP/, differs: { flanneld: 'accepts', twill: 'exits', reason: NOT_IMPLEMENTED } },
  {
    name: 'vxlan Learning',
    config: vx({}, { Learning: true }),
    field: /Backend\.Learning/,
    differs: { flanneld: 'accepts', twill: 'exits', reason: NOT_IMPLEMENTED },
  },
  { name: 'udp backend, SubnetLen 31', config: vx({ SubnetLen: 31 }, { Type: 'udp' }), field: /SubnetLen 31/ },
  { name: 'host-gw ignores vxlan options', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","VNI":-1,"Port":"x","MTU":-5}}' },
  // invalid
  { name: 'Network missing', config: '{"Backend":{"Type":"vxlan"}}', field: /Network: missing/ },
  { name: 'Network not a CIDR', config: vx({ Network: '10.244.0.0' }), field: /Network "10\.244\.0\.0"/ },
  { name: 'Network an IPv6 CIDR', config: vx({ Network: 'fd00::/64' }), field: /Network "fd00::\/64"/ },
  { name: '/29 Network', config: vx({ Network: '10.244.0.0/29' }), field: /Network 10\.244\.0\.0\/29/ },
  { name: 'SubnetLen 31 (too long)', config: vx({ SubnetLen: 31 }), field: /SubnetLen 31/ },
  { name: 'SubnetLen 17 in a /16 (too short)', config: vx({ SubnetLen: 17 }), field: /SubnetLen 17/ },
  { name: 'SubnetLen negative', config: vx({ SubnetLen: -1 }), field: /SubnetLen/ },
  { name: 'SubnetLen a string', config: vx({ SubnetLen: '24' }), field: /SubnetLen/ },
  { name: 'SubnetMin outside the Network', config: vx({ SubnetMin: '10.245.1.0' }), field: /SubnetMin 10\.245\.1\.0/ },
  { name: 'SubnetMin misaligned', config: vx({ SubnetMin: '10.244.1.5' }), field: /SubnetMin 10\.244\.1\.5/ },
  { name: 'SubnetMax misaligned', config: vx({ SubnetMax: '10.244.200.128' }), field: /SubnetMax 10\.244\.200\.128/ },
  { name: 'SubnetMin above SubnetMax', config: vx({ SubnetMin: '10.244.200.0', SubnetMax: '10.244.100.0' }), field: /SubnetMin/ },
  { name: 'unknown Backend.Type', config: vx({}, { Type: 'vxlan2' }), field: /Backend\.Type "vxlan2"/ },
  { name: 'Backend not an object', config: '{"Network":"10.244.0.0/16","Backend":"vxlan"}', field: /Backend/ },
  { name: 'Backend.Type a number', config: '{"Network":"10.244.0.0/16","Backend":{"Type":1}}', field: /Backend\.Type/ },
  { name: 'negative VNI', config: vx({}, { VNI: -1 }), field: /Backend\.VNI/ },
  { name: 'VNI above 2^24-1', config: vx({}, { VNI: 16777216 }), field: /Backend\.VNI/ },
  { name: 'VNI a string', config: vx({}, { VNI: '1' }), field: /Backend\.VNI: must be a number/ },
  {
    name: 'Port above 65535',
    config: vx({}, { Port: 70000 }),
    field: /Backend\.Port: must be <= 65535/,
    differs: {
      flanneld: 'accepts',
      twill: 'exits',
      reason: 'flanneld hands 70000 to netlink as a 16-bit port (70000 - 65536 = 4464): a flanneld bug twill does not copy',
    },
  },
  {
    name: 'negative MTU',
    config: vx({}, { MTU: -1 }),
    field: /Backend\.MTU: must not be negative/,
    differs: {
      flanneld: 'accepts',
      twill: 'exits',
      reason: 'flanneld writes FLANNEL_MTU=-51 (the MTU minus VXLAN overhead, unchecked): a flanneld bug twill does not copy',
    },
  },
  {
    name: 'MTU 0',
    config: vx({}, { MTU: 0 }),
    differs: {
      flanneld: 'accepts',
      twill: 'accepts',
      files: { flanneld: /FLANNEL_MTU=-50\n/, twill: /FLANNEL_MTU=1450\n/ },
      reason: 'flanneld takes an explicit 0 as the MTU and writes FLANNEL_MTU=-50; twill takes 0 as unset (the interface MTU), as Port 0 is in both',
    },
  },
  { name: 'bad JSON', config: '{"Network":"10.244.0.0/16",', field: /not valid JSON/ },
  { name: 'not an object', config: '[]', field: /must be a JSON object/ },
  { name: 'EnableIPv4 and EnableIPv6 false', config: vx({ EnableIPv4: false }), field: /EnableIPv4 and EnableIPv6/ },
  { name: 'EnableIPv6 without IPv6Network', config: vx({ EnableIPv6: true }), field: /IPv6Network: missing/ },
  { name: 'IPv6Network /125', config: vx({ EnableIPv6: true, IPv6Network: 'fd10:244::/125' }), field: /IPv6Network fd10:244::\/125/ },
  { name: 'IPv6SubnetLen 127', config: vx({ EnableIPv6: true, IPv6Network: 'fd10:244::/56', IPv6SubnetLen: 127 }), field: /IPv6SubnetLen 127/ },
  { name: 'IPv6SubnetLen 57 in a /56', config: vx({ EnableIPv6: true, IPv6Network: 'fd10:244::/56', IPv6SubnetLen: 57 }), field: /IPv6SubnetLen 57/ },
  { name: 'IPv6SubnetMin outside', config: vx({ EnableIPv6: true, IPv6Network: 'fd10:244::/56', IPv6SubnetMin: 'fd11::' }), field: /IPv6SubnetMin fd11::/ },
  {
    name: 'IPv6SubnetMin misaligned',
    config: vx({ EnableIPv6: true, IPv6Network: 'fd10:244::/56', IPv6SubnetMin: 'fd10:244:0:1::1' }),
    field: /IPv6SubnetMin fd10:244:0:1::1/,
  },
  { name: 'IPv6Network an IPv4 CIDR', config: vx({ EnableIPv6: true, IPv6Network: '10.0.0.0/8' }), field: /IPv6Network "10\.0\.0\.0\/8"/ },
];

describe('3. network configs: flanneld and twill accept and refuse the same ones', () => {
  const table: string[] = [];
  afterAll(() => {
    console.log(table.join('\n'));
  });

  it.each(rows)(
    '$name',
    async (row) => {
      await node.setMtu(1500);
      await node.reset(row.config);
      const f = await node.flanneld(row.flags);
      const leaseF = await node.leases();
      // twill finds flanneld's lease (same PublicIP) and reuses it: accepted configs must give the same file.
      const t = await node.twill(row.flags);
      const leaseT = await node.leases();
      const verdict = row.differs ? `differs by design: ${row.differs.reason}` : f.kind === t.kind ? 'agree' : 'DISAGREE';
      const line = `PARITY ${row.name.padEnd(40)} | ${row.config.padEnd(100)} | flanneld ${describeOutcome(f).slice(0, 140)} | twill ${describeOutcome(t).slice(0, 200)} | ${verdict}`;
      table.push(line);
      console.log(line);
      if (f.kind === 'accepts' && row.name === 'IPv6 only') subnetFiles.set('IPv6 only', f.file);
      if (f.kind === 'accepts' && t.kind === 'accepts') console.log(`PARITY-LEASE ${row.name}\n  flanneld ${leaseF}\n  twill    ${leaseT}`);
      if (row.differs) {
        expect([f.kind, t.kind]).toEqual([row.differs.flanneld, row.differs.twill]);
        if (row.differs.files && f.kind === 'accepts' && t.kind === 'accepts') {
          console.log(`PARITY-FILES ${row.name}\n  flanneld ${JSON.stringify(f.file)}\n  twill    ${JSON.stringify(t.file)}`);
          expect(f.file).toMatch(row.differs.files.flanneld);
          expect(t.file).toMatch(row.differs.files.twill);
        }
      } else {
        expect(t.kind).toBe(f.kind);
        if (f.kind === 'accepts' && t.kind === 'accepts') {
          expect(t.file).toBe(f.file);
          // The same lease record: twill took flanneld's over, with the same attributes.
          expect(leaseT).toBe(leaseF);
        }
      }
      // A refusal names the field (a row without `field` must not be refused).
      if (t.kind !== 'accepts') expect(t.message).toMatch(row.field ?? /^$/);
      if (t.kind === 'exits') expect(t.code).toBe(1);
    },
    60_000,
  );
});

describe("2. twill docker-opts and flannel's mk-docker-opts.sh, on the same subnet files", () => {
  const variants: { args: string[]; env?: Record<string, string> }[] = [
    { args: [] },
    { args: ['-c'] },
    { args: ['-i'] },
    { args: ['-ic'] },
    { args: ['-m'] },
    { args: ['-c', '-m'] },
    { args: ['-im'] },
    { args: ['-k', 'EXTRA_OPTS'] },
    { args: ['-c', '-k', 'EXTRA_OPTS'], env: { EXTRA_OPTS: '--debug' } },
    { args: [], env: { DOCKER_OPT_DNS: '--dns=10.0.0.10' } },
    { args: ['-ck', 'DOCKER_OPTS'], env: { DOCKER_OPTS: '--log-level=warn', DOCKER_OPT_DNS: '--dns=10.0.0.10' } },
  ];
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tpar-dock-'));
    // The script ends by looking for a route to the subnet in `ip route show`: a namespace of its own has none.
    await run(['ip', 'netns', 'del', DOCKER_NS], { allowFailure: true });
    await run(['ip', 'netns', 'add', DOCKER_NS]);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Both programs, each with only PATH and the variant's variables in its environment (the script takes every DOCKER_OPT_* it finds there). */
  async function both(subnetFile: string, v: { args: string[]; env?: Record<string, string> }) {
    const env = { PATH: process.env.PATH!, ...v.env };
    const out = { script: path.join(dir, 'script.env'), twill: path.join(dir, 'twill.env') };
    rmSync(out.script, { force: true });
    rmSync(out.twill, { force: true });
    const script = await run([mkDockerOpts(), '-f', subnetFile, '-d', out.script, ...v.args], { netns: DOCKER_NS, env, allowFailure: true });
    const twill = await run([twillBin(), 'docker-opts', '-f', subnetFile, '-d', out.twill, ...v.args], { netns: DOCKER_NS, env, allowFailure: true });
    const read = (f: string) => {
      try {
        return readFileSync(f, 'utf8');
      } catch {
        return '(none)';
      }
    };
    return {
      script: { ok: script.code === 0, file: read(out.script), stderr: script.stderr.trim() },
      twill: { ok: twill.code === 0, file: read(out.twill), stderr: twill.stderr.trim() },
    };
  }

  it('parts 1 and 3 gave the subnet files to compare on', () => {
    expect([...subnetFiles.keys()]).toEqual(
      expect.arrayContaining(['vxlan', 'vxlan --ip-masq', 'host-gw underlay MTU 9000 --ip-masq', 'dual-stack vxlan', 'IPv6 only']),
    );
  });

  it.each(['vxlan', 'vxlan --ip-masq', 'host-gw underlay MTU 9000 --ip-masq', 'vxlan /26 subnets of a /20', 'dual-stack vxlan', 'IPv6 only'])(
    'the subnet file of %s, every option',
    async (name) => {
      const contents = subnetFiles.get(name);
      expect(contents, `part 1 wrote no subnet file for ${name}`).toBeDefined();
      const subnetFile = path.join(dir, 'subnet.env');
      writeFileSync(subnetFile, contents!);
      const failures: string[] = [];
      for (const v of variants) {
        const r = await both(subnetFile, v);
        const label = `${name} ${v.args.join(' ')}${v.env ? ` env ${JSON.stringify(v.env)}` : ''}`;
        console.log(
          `PARITY-DOCKER ${label}: script ${r.script.ok ? 'ok' : `failed (${r.script.stderr})`} ${JSON.stringify(r.script.file)} | twill ${r.twill.ok ? 'ok' : `failed (${r.twill.stderr})`} ${JSON.stringify(r.twill.file)}`,
        );
        if (r.script.ok !== r.twill.ok || r.script.file !== r.twill.file) failures.push(label);
      }
      expect(failures).toEqual([]);
    },
    120_000,
  );

  const vxlanFile = () => subnetFiles.get('vxlan')!;
  const edges: { name: string; contents: () => string | undefined; args: string[]; env?: Record<string, string>; route?: true; differs?: string }[] = [
    { name: 'no FLANNEL_MTU', contents: () => vxlanFile().replace(/FLANNEL_MTU=.*\n/, ''), args: [] },
    { name: 'FLANNEL_IPMASQ=yes', contents: () => vxlanFile().replace(/FLANNEL_IPMASQ=.*\n/, 'FLANNEL_IPMASQ=yes\n'), args: [] },
    { name: '-m with DOCKER_OPT_IPMASQ in the environment', contents: vxlanFile, args: ['-m'], env: { DOCKER_OPT_IPMASQ: '--ip-masq=true' } },
    { name: 'a route to our subnet via another node', contents: vxlanFile, args: ['-c'], route: true },
    {
      name: 'no subnet file',
      contents: () => undefined,
      args: [],
      differs: 'the script writes options without --bip (Docker would pick a bridge subnet of its own); twill refuses, naming the file',
    },
    {
      name: 'a subnet file without FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET',
      contents: () => 'FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n',
      args: [],
      differs: 'as for no file: the script writes options without --bip; twill refuses a file the agent could not have written',
    },
  ];

  it.each(edges)('$name', async (e) => {
    const subnetFile = path.join(dir, 'edge.env');
    rmSync(subnetFile, { force: true });
    const contents = e.contents();
    if (contents !== undefined) writeFileSync(subnetFile, contents);
    if (e.route) {
      // Our subnet routed to another node's address, as a stale host-gw route would be.
      const subnet = /FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.1\/(\d+)/.exec(contents!)!;
      await run(['ip', '-n', DOCKER_NS, 'link', 'add', 'tpar-r0', 'type', 'veth', 'peer', 'name', 'tpar-r1']);
      await run(['ip', '-n', DOCKER_NS, 'addr', 'add', '192.168.132.2/24', 'dev', 'tpar-r0']);
      await run(['ip', '-n', DOCKER_NS, 'link', 'set', 'tpar-r0', 'up']);
      await run(['ip', '-n', DOCKER_NS, 'link', 'set', 'tpar-r1', 'up']);
      await run(['ip', '-n', DOCKER_NS, 'route', 'add', `${subnet[1]}.0/${subnet[2]}`, 'via', '192.168.132.1']);
    }
    try {
      const r = await both(subnetFile, { args: e.args, env: e.env });
      console.log(
        `PARITY-DOCKER edge ${e.name}: script ${r.script.ok ? 'ok' : `failed (${r.script.stderr})`} ${JSON.stringify(r.script.file)} | twill ${r.twill.ok ? 'ok' : `failed (${r.twill.stderr})`} ${JSON.stringify(r.twill.file)}${e.differs ? ` | differs by design: ${e.differs}` : ''}`,
      );
      if (e.differs) {
        expect([r.script.ok, r.twill.ok]).toEqual([true, false]);
      } else {
        expect(r.twill.ok).toBe(r.script.ok);
        expect(r.twill.file).toBe(r.script.file);
      }
    } finally {
      if (e.route) await run(['ip', '-n', DOCKER_NS, 'link', 'del', 'tpar-r0'], { allowFailure: true });
    }
  });
});
