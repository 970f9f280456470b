import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseNetworkConfig } from '../../controller/config/network-config.js';
import { EtcdStore } from '../../controller/etcd/store.js';
import { SubnetManager } from '../../controller/subnet/manager.js';
import { LeaseWatcher } from '../../controller/subnet/watcher.js';
import { logger } from '../../controller/util/log.js';
import { startTestEtcd, type TestEtcd } from '../support/etcd.js';
import { leaseStoreContract } from '../support/lease-store-contract.js';

let etcd: TestEtcd;
let store: EtcdStore;
beforeAll(async () => {
  etcd = await startTestEtcd();
  store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/coreos.com/network' });
});
afterAll(async () => {
  store?.close();
  await etcd?.destroy();
});

describe('EtcdStore against a real etcd', () => {
  leaseStoreContract(() => ({
    store,
    putRaw: (subnetKey, value) => store.putRaw(store.subnetsPrefix + subnetKey, value),
    compact: async () => {
      const { revision } = await store.listLeases();
      execFileSync('etcdctl', ['--endpoints', etcd.endpoint, 'compact', revision], { env: { ...process.env, ETCDCTL_API: '3' } });
    },
  }));

  it('reads and writes the network config under the prefix', async () => {
    expect(await store.getConfig()).toBeUndefined();
    await store.putConfig('{"Network":"10.244.0.0/16"}');
    expect(await store.getConfig()).toBe('{"Network":"10.244.0.0/16"}');
  });

  it('keeps a lease alive while one of its endpoints is down: each keepalive that lands on the dead one is asked again', async () => {
    // Port 1 on loopback refuses at once: a stopped member. etcd3 picks a member at random per
    // keepalive; without the retry about half of these fail (the negative control, the retry taken out by hand: 7 of 20 failed).
    const twoEndpoints = new EtcdStore({ endpoints: ['http://127.0.0.1:1', etcd.endpoint], prefix: '/keepalive-failover' });
    try {
      const held = await twoEndpoints.createLease('10.5.0.0-24', '{"PublicIP":"192.0.2.1","BackendType":"vxlan"}', 30);
      const outcomes = [];
      for (let i = 0; i < 20; i++)
        outcomes.push(
          await held!.keepalive().then(
            (ttl) => ttl > 0,
            (err: Error) => err.message,
          ),
        );
      expect(outcomes).toEqual(Array(20).fill(true));
    } finally {
      twoEndpoints.close();
    }
  });

  it('names an unreadable TLS file', () => {
    expect(() => new EtcdStore({ endpoints: ['https://127.0.0.1:1'], prefix: '/x', caFile: '/nonexistent/ca.pem' })).toThrow(
      /--etcd-cafile \/nonexistent\/ca.pem: cannot read: ENOENT/,
    );
  });
});

describe('IPv6 leases against a real etcd', () => {
  const log = logger('test');
  const v6store = (prefix: string) => new EtcdStore({ endpoints: [etcd.endpoint], prefix });
  const vxlan6 = (n: number) => ({ backendType: 'vxlan' as const, publicIp: '0.0.0.0', publicIpv6: `fd00::${n}`, vni: 1, vtepMac6: `02:00:00:00:06:0${n}` });
  const opts = { ttlSeconds: 60, renewMarginSeconds: 10, log };

  it("gives IPv6-only nodes distinct `0.0.0.0-0&...` keys, finds each one's own by PublicIPv6, and watches them apart", async () => {
    const s = v6store('/v6only/network');
    try {
      const config = parseNetworkConfig('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}');
      const a = await new SubnetManager(s, config, vxlan6(1), opts).acquire();
      const b = await new SubnetManager(s, config, vxlan6(2), opts).acquire();
      expect(a.key).toMatch(/^0\.0\.0\.0-0&fc00:0:0:[0-9a-f]+::-64$/);
      expect(b.key).not.toBe(a.key);
      const again = await new SubnetManager(s, config, vxlan6(1), opts).acquire();
      expect(again.key).toBe(a.key);
      const { records } = await s.listLeases();
      expect(records.find((r) => r.key.endsWith(a.key))!.value).toBe(
        '{"PublicIP":"0.0.0.0","PublicIPv6":"fd00::1","BackendType":"vxlan","BackendV6Data":{"VNI":1,"VtepMAC":"02:00:00:00:06:01"}}',
      );
      const watcher = new LeaseWatcher({ store: s, onChange: () => undefined, log, routableIn: config });
      await watcher.start();
      expect([...watcher.leases.values()].map((l) => l.publicIpv6).sort()).toEqual(['fd00::1', 'fd00::2']);
      await watcher.stop();
    } finally {
      s.close();
    }
  });

  it('acquires both families in one dual-stack key, from both subnet-file hints', async () => {
    const s = v6store('/dual/network');
    try {
      const config = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}');
      const own = await new SubnetManager(
        s,
        config,
        { backendType: 'host-gw', publicIp: '10.0.0.1', publicIpv6: 'fd00::1' },
        { ...opts, hint: { ip: 0x0af40700, len: 24 }, hint6: { ip: 0xfc00_0000_0000_0007n << 64n, len: 64 } },
      ).acquire();
      expect(own.key).toBe('10.244.7.0-24&fc00:0:0:7::-64');
      const { records } = await s.listLeases();
      expect(records.find((r) => r.key.endsWith(own.key))!.value).toBe('{"PublicIP":"10.0.0.1","PublicIPv6":"fd00::1","BackendType":"host-gw"}');
    } finally {
      s.close();
    }
  });
});
