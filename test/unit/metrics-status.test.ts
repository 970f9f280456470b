import { describe, expect, it } from 'vitest';
import { findProblems, type StatusDoc } from '../../controller/cli/status.js';

const healthy: Omit<StatusDoc, 'problems'> = {
  pinDir: '/sys/fs/bpf/twill',
  bpf: true,
  node: {
    public_ip: '192.168.77.1',
    vtep_mac: '0a:58:00:00:00:01',
    underlay_mac: 'aa:bb:cc:dd:ee:01',
    subnet: '10.244.1.0',
    network: '10.244.0.0',
    subnet_len: 24,
    network_len: 16,
    vxlan_port: 8472,
    vni: 1,
    underlay_ifindex: 2,
    flags: 0,
  },
  lease: { subnet: '10.244.1.0/24' },
  subnetFile: { path: '/run/flannel/subnet.env', network: '10.244.0.0/16', subnet: '10.244.1.0/24', mtu: 1450, ipMasq: false },
  attach: {
    encap: { mode: 'tcx', iface: 'twill0', ifindex: 3 },
    decap: { mode: 'xdp-link', iface: 'eth0', ifindex: 2 },
    attachedAt: '2026-11-23T10:00:00.000Z',
    layoutVersion: 2,
  },
  peers: [{ publicIp: '192.168.77.2', subnet: '10.244.2.0/24', vtepMac: '0a:58:00:00:00:02', statsSlot: 1 }],
  totals: { encap_packets: 0, encap_bytes: 0, decap_packets: 0, decap_bytes: 0 },
  drops: {},
  pinned: [],
  health: { address: '192.168.77.1:8471', live: true, ready: true, detail: {} },
};
const links = { encap: true, decap: true };

describe('twill status cross-checks', () => {
  it('finds nothing wrong on a consistent node', () => {
    expect(findProblems(healthy, links)).toEqual([]);
  });

  it('reports a subnet file that disagrees with the datapath', () => {
    expect(findProblems({ ...healthy, subnetFile: { ...healthy.subnetFile, subnet: '10.244.7.0/24' } }, links)).toEqual([
      'subnet file says 10.244.7.0/24, the datapath holds 10.244.1.0/24',
    ]);
    expect(findProblems({ ...healthy, subnetFile: { path: '/x', error: 'ENOENT' } }, links)).toEqual(['subnet file: ENOENT']);
  });

  it('reports missing links, a missing attach state and an unconfigured datapath', () => {
    expect(findProblems(healthy, { encap: false, decap: true })).toEqual(['encap link is not pinned']);
    expect(findProblems({ ...healthy, attach: undefined, node: undefined }, links)).toEqual([
      'twill_config is empty: the datapath was never configured',
      'no attach state: the programs may not be attached',
    ]);
  });

  it('on a node without pins, says so unless the agent reports kernel VXLAN mode', () => {
    const noPins = { ...healthy, bpf: false, node: undefined, attach: undefined, peers: [] };
    expect(findProblems(noPins, { encap: false, decap: false })).toEqual([
      'no BPF datapath is pinned under /sys/fs/bpf/twill (a kernel VXLAN node, or a wrong --pin-dir)',
    ]);
    expect(findProblems({ ...noPins, health: { ...healthy.health!, detail: { mode: 'kernel' } } }, { encap: false, decap: false })).toEqual([]);
    const kernelChoice = { requested: 'auto' as const, dataplane: 'kernel' as const, reasons: { dataplane: 'auto: kernel 5.10 lacks bpf_check_mtu' } };
    expect(findProblems({ ...noPins, health: undefined, dataplaneChoice: kernelChoice }, { encap: false, decap: false })).toEqual([]);
  });

  it('does not expect a link pin for legacy attachments', () => {
    const legacy = {
      ...healthy,
      attach: {
        ...healthy.attach!,
        encap: { ...healthy.attach!.encap, mode: 'clsact' as const },
        decap: { ...healthy.attach!.decap, mode: 'xdp-generic' as const },
      },
    };
    expect(findProblems(legacy, { encap: false, decap: false })).toEqual([]);
  });

  it('reports peers without a counter slot and an agent that is unreachable or not ready', () => {
    expect(findProblems({ ...healthy, peers: [{ ...healthy.peers[0], statsSlot: 0 }] }, links)).toEqual([
      'peer 192.168.77.2 has no counter slot (written by an older build, or slots exhausted)',
    ]);
    expect(findProblems({ ...healthy, health: { address: 'h:1', error: 'fetch failed' } }, links)).toEqual(['healthz h:1: fetch failed']);
    expect(findProblems({ ...healthy, health: { address: 'h:1', live: true, ready: false, detail: { watch: 'backoff' } } }, links)).toEqual([
      'agent not ready: {"watch":"backoff"}',
    ]);
  });
});
