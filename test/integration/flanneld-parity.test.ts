import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { flanneld, mkDockerOpts } from '../../controller/lab/peers.js';
import { parseCidr } from '../../controller/net/ipv4.js';
import { parseCidr6 } from '../../controller/net/ipv6.js';
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
/** Every subnet file part 1 saw, for part 2: name -> contents. */
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
  const value = encodeLeaseValue(backendType === 'vxlan' ? { backendType, publicIp: ADDRESS, publicIpv6: subnet6 ? ADDRESS6 : undefined, vni: 1 } : { backendType, publicIp: ADDRESS, publicIpv6: subnet6 ? ADDRESS6 : undefined });
  await node.etcdctl('put', `${PREFIX}/subnets/${key}`, '--', value);
}

const accepted = (o: Outcome): string => {
  if (o.kind !== 'accepts') throw new Error(`expected a subnet file, got: ${describeOutcome(o)}`);
  return o.file;
};

describe('1. subnet.env, byte for byte, for the same config and lease', () => {
  const cases: { name: string; config: string; flags?: string[]; mtu?: number; subnet: string; subnet6?: string; backend: 'vxlan' | 'host-gw' }[] = [
    { name: 'vxlan', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', subnet: '10.244.57.0/24', backend: 'vxlan' },
    { name: 'vxlan --ip-masq', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', flags: ['--ip-masq'], subnet: '10.244.57.0/24', backend: 'vxlan' },
    { name: 'host-gw', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', subnet: '10.244.58.0/24', backend: 'host-gw' },
    { name: 'host-gw --ip-masq', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', flags: ['--ip-masq'], subnet: '10.244.58.0/24', backend: 'host-gw' },
    { name: 'vxlan Backend.MTU 1400', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}', subnet: '10.244.59.0/24', backend: 'vxlan' },
    { name: 'vxlan underlay MTU 9000', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', mtu: 9000, subnet: '10.244.60.0/24', backend: 'vxlan' },
    { name: 'host-gw underlay MTU 9000 --ip-masq', config: '{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}', mtu: 9000, flags: ['--ip-masq'], subnet: '10.244.60.0/24', backend: 'host-gw' },
    { name: 'vxlan /26 subnets of a /20', config: '{"Network":"10.50.16.0/20","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":7}}', subnet: '10.50.17.64/26', backend: 'vxlan' },
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

  it.each(cases)('$name', async (c) => {
    await node.setMtu(c.mtu ?? 1500);
    await node.reset(c.config);
    await reserve(c.subnet, c.subnet6, c.backend);
    const fromFlanneld = accepted(await node.flanneld(c.flags));
    const fromTwill = accepted(await node.twill(c.flags));
    subnetFiles.set(c.name, fromFlanneld);
    console.log(`PARITY-SUBNET ${c.name}: ${JSON.stringify(fromFlanneld)}`);
    // Both took the reservation: the file names its first address.
    expect(fromFlanneld).toContain(`FLANNEL_SUBNET=${c.subnet.replace(/\.\d+\//, (m) => `.${Number(m.slice(1, -1)) + 1}/`)}\n`);
    expect(fromTwill).toBe(fromFlanneld);
  }, 60_000);
});
