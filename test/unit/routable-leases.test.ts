import { describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../controller/config/network-config.js';
import { parseCidr } from '../../controller/net/ipv4.js';
import { unroutableReason } from '../../controller/subnet/allocate.js';
import { encodeLeaseValue } from '../../controller/subnet/lease.js';
import { usableLeases } from '../../controller/subnet/manager.js';
import type { Logger } from '../../controller/util/log.js';

/* Which leases the datapath may carry: its maps are keyed by the config's subnet size. */
const config = parseNetworkConfig('{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan"}}');
const value = encodeLeaseValue({ backendType: 'vxlan', publicIp: '192.168.1.9', vni: 1, vtepMac: '02:00:00:00:00:09' });
const record = (key: string) => ({ key: `/coreos.com/network/subnets/${key}`, value, lease: '7', modRevision: '3' });

/** A logger that keeps the reason of every warning. */
function collectingLog(): Logger & { warnings: string[] } {
  const warnings: string[] = [];
  const ignore = () => undefined;
  const log = {
    warnings,
    debug: ignore,
    info: ignore,
    error: ignore,
    warn: (_msg: string, fields?: Record<string, unknown>) => void warnings.push(String(fields?.reason)),
    child: () => log,
  };
  return log;
}

describe('routable leases', () => {
  it.each([
    ['10.244.7.0/24', undefined],
    ['10.244.0.0/16', '10.244.0.0/16 is not a /24 as the network config says'],
    ['10.244.6.0/23', '10.244.6.0/23 is not a /24 as the network config says'],
    ['10.244.7.128/25', '10.244.7.128/25 is not a /24 as the network config says'],
    ['10.245.7.0/24', '10.245.7.0/24 is outside the network 10.244.0.0/16'],
  ])('%s: %s', (subnet, reason) => {
    expect(unroutableReason(config, { subnet: parseCidr(subnet)! })).toBe(reason);
  });

  it('a listing for the datapath leaves misfits out with a warning; one for the allocator keeps them', () => {
    const records = [record('10.244.7.0-24'), record('10.244.6.0-23'), record('10.245.7.0-24')];
    const log = collectingLog();
    expect(usableLeases(records, log, config).map((l) => l.subnet)).toEqual([parseCidr('10.244.7.0/24')]);
    expect(log.warnings).toEqual([
      'lease 10.244.6.0-23: 10.244.6.0/23 is not a /24 as the network config says',
      'lease 10.245.7.0-24: 10.245.7.0/24 is outside the network 10.244.0.0/16',
    ]);
    expect(usableLeases(records, collectingLog())).toHaveLength(3);
  });
});
