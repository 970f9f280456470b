import { describe, expect, it } from 'vitest';
import { formatPathLine } from '../../controller/cli/maps.js';
import { monitorOptions } from '../../controller/monitor/events.js';
import { deprecatedCounters, pathStatsStruct, statsStruct, withDeprecatedCounters, type PathStatsFields, type StatsFields } from '../../maps/layout.js';

/*
 * Layout 8 split "not IPv4" (which counted IPv6 too, on a node without IPv6) into "not IP" and
 * "IPv6 off". The old names are an interface, so they are still reported, as the sum of the two.
 */
const zeros = <T>(fields: readonly { name: string }[]): T => Object.fromEntries(fields.map((f) => [f.name, 0n])) as T;

describe('deprecated counter names', () => {
  it('each is the sum of the counters that replaced it, reported right after the first of them', () => {
    const stats = withDeprecatedCounters({ ...zeros<StatsFields>(statsStruct.fields), drop_not_ip: 3n, drop_ipv6_off: 4n, drop_no_peer: 9n });
    expect(stats.drop_not_ipv4).toBe(7n);
    const names = Object.keys(stats);
    expect(names.slice(names.indexOf('drop_no_peer'), names.indexOf('drop_no_peer') + 4)).toEqual([
      'drop_no_peer',
      'drop_not_ip',
      'drop_not_ipv4',
      'drop_too_big',
    ]);
    // Every map counter is still there, once, and the old name is the only one added.
    expect(names.filter((n) => !statsStruct.fields.some((f) => f.name === n))).toEqual(['drop_not_ipv4']);

    const path = withDeprecatedCounters({ ...zeros<PathStatsFields>(pathStatsStruct.fields), not_ip: 1n, ipv6_off: 10n });
    expect(path.not_ipv4).toBe(11n);
    expect(Object.keys(path).slice(0, 3)).toEqual(['fast', 'not_ip', 'not_ipv4']);
  });

  it('name counters the maps have, and only deprecated names are missing from the maps', () => {
    const fields = new Set([...statsStruct.fields, ...pathStatsStruct.fields].map((f) => f.name));
    for (const [old, parts] of Object.entries(deprecatedCounters)) {
      expect(fields.has(old)).toBe(false);
      for (const p of parts) expect(fields.has(p)).toBe(true);
    }
  });

  it('twill monitor --reason takes an old name as the counters that replaced it, in its own kind only', () => {
    const defaults = { 'pin-dir': '/sys/fs/bpf/twill', json: false, type: 'drop', reason: '', address: '', 'trace-sample': 1, count: 0 };
    const reasons = (argv: Partial<typeof defaults>) => [...monitorOptions({ ...defaults, ...argv }, new Set(Object.keys(argv))).filter.reasons];
    expect(reasons({ reason: 'drop_not_ipv4,drop_bad_vni' })).toEqual(['drop_not_ip', 'drop_ipv6_off', 'drop_bad_vni']);
    expect(reasons({ type: 'trace', reason: 'not_ipv4' })).toEqual(['not_ip', 'ipv6_off']);
    expect(() => reasons({ type: 'trace', reason: 'drop_not_ipv4' })).toThrow(/--reason drop_not_ipv4: not a reason of --type trace events/);
  });

  it('human output shows only the new names', () => {
    const line = formatPathLine({ fast: 5, not_ip: 1, not_ipv4: 3, ipv6_off: 2 });
    expect(line).toBe('fast 5, to the stack: not_ip=1 ipv6_off=2');
  });
});
