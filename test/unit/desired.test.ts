import { describe, expect, it } from 'vitest';
import { desiredMaps, diffMap } from '../../controller/reconcile/desired.js';

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
