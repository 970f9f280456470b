import { describe, expect, it } from 'vitest';
import { DesiredState, desiredMaps, diffMap } from '../../controller/reconcile/desired.js';

const self = { subnet: '10.244.1.0/24', publicIp: '192.168.77.1' };
const lease = (n: number, mac = `0a:58:00:00:00:0${n}`) => ({ subnet: `10.244.${n}.0/24`, publicIp: `192.168.77.${n}`, vtepMac: mac });

describe('desiredMaps', () => {
  it('maps every remote lease to a subnet entry and a peer entry, skipping our own', () => {
    const d = desiredMaps(self, [lease(1), lease(2), lease(3)]);
    expect([...d.subnets.keys()].sort()).toEqual(['10.244.2.0', '10.244.3.0']);
    expect(d.subnets.get('10.244.2.0')).toEqual({ public_ip: '192.168.77.2', vtep_mac: '0a:58:00:00:00:02', flags: 0 });
    expect(d.peers.get('192.168.77.3')).toEqual({ subnet: '10.244.3.0', vtep_mac: '0a:58:00:00:00:03', subnet_len: 24, flags: 0 });
    expect(d.skipped).toEqual([]);
  });

  it('refuses a lease that claims our subnet from another address, and says why', () => {
    const d = desiredMaps(self, [{ subnet: '10.244.1.0/24', publicIp: '192.168.77.9', vtepMac: '0a:58:00:00:00:09' }]);
    expect(d.subnets.size).toBe(0);
    expect(d.skipped[0].reason).toMatch(/claims our subnet 10.244.1.0\/24/);
  });

  it('keeps one subnet per PublicIP, the same one on every run', () => {
    const a = { subnet: '10.244.5.0/24', publicIp: '192.168.77.5', vtepMac: '0a:58:00:00:00:05' };
    const b = { subnet: '10.244.6.0/24', publicIp: '192.168.77.5', vtepMac: '0a:58:00:00:00:06' };
    const d1 = desiredMaps(self, [b, a]);
    const d2 = desiredMaps(self, [a, b]);
    expect([...d1.subnets.keys()]).toEqual(['10.244.5.0']);
    expect([...d2.subnets.keys()]).toEqual(['10.244.5.0']);
    expect(d1.skipped[0].reason).toMatch(/already holds 10.244.5.0\/24/);
  });

  it('gives a shared PublicIP to the older record, so a stray record cannot take a live node over', () => {
    const live = { subnet: '10.244.5.0/24', publicIp: '192.168.77.5', vtepMac: '0a:58:00:00:00:05', createRevision: '17' };
    const stray = { subnet: '10.244.0.0/24', publicIp: '192.168.77.5', vtepMac: '0a:58:00:00:00:05', createRevision: '230' };
    const d = desiredMaps(self, [stray, live]);
    expect([...d.subnets.keys()]).toEqual(['10.244.5.0']);
    expect(d.peers.get('192.168.77.5')!.subnet).toBe('10.244.5.0');
    expect(d.skipped).toEqual([{ lease: stray, reason: 'PublicIP 192.168.77.5 already holds 10.244.5.0/24' }]);
  });

  it('normalises MAC case so a re-read lease does not look changed', () => {
    const d = desiredMaps(self, [lease(2, '0A:58:00:00:00:AB')]);
    expect(d.subnets.get('10.244.2.0')!.vtep_mac).toBe('0a:58:00:00:00:ab');
  });
});

describe('diffMap', () => {
  it('touches only what differs: adds, changes and stale entries', () => {
    const current = new Map([
      ['a', { x: 1 }],
      ['b', { x: 2 }],
      ['stale', { x: 9 }],
    ]);
    const desired = new Map([
      ['a', { x: 1 }],
      ['b', { x: 3 }],
      ['c', { x: 4 }],
    ]);
    const d = diffMap(current, desired);
    expect(d.upsert).toEqual([
      ['b', { x: 3 }],
      ['c', { x: 4 }],
    ]);
    expect(d.remove).toEqual(['stale']);
  });

  it('is empty when the maps already match', () => {
    const m = new Map([['a', { x: 1 }]]);
    expect(diffMap(m, new Map([['a', { x: 1 }]]))).toEqual({ upsert: [], remove: [] });
  });
});

describe('DesiredState', () => {
  // A small world so that conflicts are common: 6 base addresses x 2 lengths, 4 PublicIPs (ours among them).
  const cidrs = [1, 2, 3, 4, 5, 6].flatMap((n) => [`10.244.${n}.0/24`, `10.244.${n}.0/25`]).concat(self.subnet);
  const ips = ['192.168.77.1', '192.168.77.2', '192.168.77.3', '192.168.77.4'];
  const macs = ['0a:58:00:00:00:01', '0A:58:00:00:00:02'];

  function random(seed: number) {
    return () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
  }

  it('matches desiredMaps after every change of a random sequence, and reports exactly the differences', () => {
    for (let run = 0; run < 40; run++) {
      const rnd = random(run + 1);
      const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
      const state = new DesiredState(self);
      const leases = new Map<string, { subnet: string; publicIp: string; vtepMac: string; createRevision: string }>();
      let previous = desiredMaps(self, []);
      for (let step = 0; step < 30; step++) {
        const batch: [string, { subnet: string; publicIp: string; vtepMac: string; createRevision: string } | undefined][] = [];
        for (let k = 1 + Math.floor(rnd() * 3); k > 0; k--) {
          const cidr = pick(cidrs);
          const lease = rnd() < 0.3 ? undefined : { subnet: cidr, publicIp: pick(ips), vtepMac: pick(macs), createRevision: String(Math.floor(rnd() * 5)) };
          batch.push([cidr, lease]);
          if (lease) leases.set(cidr, lease);
          else leases.delete(cidr);
        }
        const changes = state.update(batch);
        const full = desiredMaps(self, [...leases.values()]);
        expect(state.subnets).toEqual(full.subnets);
        expect(state.peers).toEqual(full.peers);
        const sortDiff = <V>(d: { upsert: [string, V][]; remove: string[] }) => ({ upsert: [...d.upsert].sort(), remove: [...d.remove].sort() });
        expect(sortDiff(changes.subnets)).toEqual(sortDiff(diffMap(previous.subnets, full.subnets)));
        expect(sortDiff(changes.peers)).toEqual(sortDiff(diffMap(previous.peers, full.peers)));
        previous = full;
      }
    }
  });
});
