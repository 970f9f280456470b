import type { AgentSnapshot } from '../../controller/metrics/agent-metrics.js';
import { pathStatsStruct, statsStruct, withDeprecatedCounters, type PathStatsFields, type StatsFields } from '../../maps/layout.js';

/*
 * A BPF node with everything /metrics can report (lease, reconciles, watch, fast path, two peers,
 * unattributed traffic), each counter a distinct value so a sample moved to another series shows.
 * test/fixtures/metrics/agent-15aa35c.prom is this snapshot as the hand-written formatter of
 * 15aa35c rendered it: the interface the prom-client registry must keep.
 */
const counted = <T>(fields: readonly { name: string }[], base: number): T => Object.fromEntries(fields.map((f, i) => [f.name, BigInt(base + i)])) as T;

export const fullSnapshot: AgentSnapshot = {
  ready: true,
  mode: 'bpf',
  lease: { subnet: '10.244.1.0/24', reservation: false, expiresAt: 1_700_000_000_400 },
  reconcile: { count: 7, errors: 1, lastDurationMs: 2.5, totalDurationMs: 40 },
  watch: { state: 'watching', resyncs: 2 },
  datapath: {
    // drop_not_ip and drop_ipv6_off add up to what 15aa35c served as drop_not_ipv4 (105).
    stats: withDeprecatedCounters({ ...counted<StatsFields>(statsStruct.fields, 100), drop_not_ip: 60n, drop_ipv6_off: 45n }),
    peerCount: 2,
    traffic: {
      peers: [
        {
          publicIp: '192.168.77.2',
          subnet: '10.244.2.0/24',
          vtepMac: '0a:58:00:00:00:02',
          slot: 1,
          encap_packets: 6n,
          encap_bytes: 600n,
          decap_packets: 5n,
          decap_bytes: 500n,
          source_drops: 2n,
        },
        {
          publicIp: '192.168.77.3',
          subnet: '10.244.3.0/24',
          vtepMac: '0a:58:00:00:00:03',
          slot: 2,
          encap_packets: 4n,
          encap_bytes: 400n,
          decap_packets: 0n,
          decap_bytes: 0n,
          source_drops: 0n,
        },
      ],
      unattributed: { encap_packets: 0n, encap_bytes: 0n, decap_packets: 9n, decap_bytes: 900n, source_drops: 0n },
    },
    // not_ip and ipv6_off likewise add up to what was served as not_ipv4 (201, 301).
    path: {
      send: withDeprecatedCounters({ ...counted<PathStatsFields>(pathStatsStruct.fields, 200), not_ip: 150n, ipv6_off: 51n }),
      receive: withDeprecatedCounters({ ...counted<PathStatsFields>(pathStatsStruct.fields, 300), not_ip: 250n, ipv6_off: 51n }),
    },
  },
  fastPath: { enabled: true, endpoints: 3, podLinks: 2 },
};
