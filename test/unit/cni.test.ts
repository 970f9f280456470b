import { describe, expect, it } from 'vitest';
import { cniMain, delegateConfig } from '../../controller/cni/plugin.js';

const subnetEnv = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n';

describe("flannel's delegate config", () => {
  it('delegates to bridge + host-local over the node subnet, as flannel does', () => {
    expect(delegateConfig({ cniVersion: '0.4.0', name: 'cbr0', type: 'flannel' }, subnetEnv)).toEqual({
      name: 'cbr0',
      type: 'bridge',
      ipMasq: true,
      mtu: 1450,
      isGateway: true,
      cniVersion: '0.4.0',
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.7.0/24' }]], routes: [{ dst: '10.244.0.0/16' }] },
    });
  });

  it('keeps what the conflist sets in delegate and ipam, and appends the network route', () => {
    const d = delegateConfig(
      { name: 'cbr0', type: 'flannel', delegate: { ipMasq: false, mtu: 1400, hairpinMode: true }, ipam: { dataDir: '/x', routes: [{ dst: '0.0.0.0/0' }] } },
      subnetEnv.replace('FLANNEL_IPMASQ=false', 'FLANNEL_IPMASQ=true'),
    );
    expect(d).toMatchObject({ ipMasq: false, mtu: 1400, hairpinMode: true, ipam: { dataDir: '/x', routes: [{ dst: '0.0.0.0/0' }, { dst: '10.244.0.0/16' }] } });
  });

  it('refuses an incomplete subnet file, naming what is missing', () => {
    expect(() => delegateConfig({ name: 'n', type: 'flannel' }, 'FLANNEL_NETWORK=10.244.0.0/16\n')).toThrow(
      /subnet file is incomplete: it has no FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ/,
    );
    expect(() => delegateConfig({ name: 'n', type: 'flannel' }, 'FLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n')).toThrow(
      /it has no FLANNEL_NETWORK or FLANNEL_IPV6_NETWORK$/,
    );
  });

  const dualEnv =
    'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:7::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n';

  it('gives host-local a range and a route per family in dual stack, IPv4 first', () => {
    const d = delegateConfig({ name: 'cbr0', type: 'flannel', ipam: { routes: [{ dst: '0.0.0.0/0' }] } }, dualEnv);
    expect(d.ipam).toEqual({
      type: 'host-local',
      ranges: [[{ subnet: '10.244.7.0/24' }], [{ subnet: 'fc00:0:0:7::/64' }]],
      routes: [{ dst: '0.0.0.0/0' }, { dst: '10.244.0.0/16' }, { dst: 'fc00::/48' }],
    });
  });

  it('gives host-local only the IPv6 range and route in an IPv6-only network', () => {
    const d = delegateConfig(
      { name: 'cbr0', type: 'flannel' },
      'FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:7::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    expect(d).toMatchObject({
      ipMasq: false,
      mtu: 1450,
      ipam: { type: 'host-local', ranges: [[{ subnet: 'fc00:0:0:7::/64' }]], routes: [{ dst: 'fc00::/48' }] },
    });
  });
});

describe('CNI protocol errors', () => {
  it('answers VERSION', async () => {
    expect(JSON.parse((await cniMain('', { CNI_COMMAND: 'VERSION' })).out).supportedVersions).toContain('0.4.0');
  });
  it('reports bad input as a CNI error on stdout with a non-zero exit', async () => {
    const r = await cniMain('{nope', { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1' });
    expect(r.code).toBe(1);
    expect(JSON.parse(r.out)).toMatchObject({ code: 6, msg: expect.stringMatching(/network config is not JSON/) });
    const missing = await cniMain('{"name":"n","type":"flannel","subnetFile":"/nonexistent/subnet.env","dataDir":"/tmp"}', {
      CNI_COMMAND: 'ADD',
      CNI_CONTAINERID: 'c1',
    });
    expect(JSON.parse(missing.out).msg).toMatch(/cannot read subnet file \/nonexistent\/subnet.env \(is the agent running\?\)/);
  });
  it('treats DEL of an unknown container as done', async () => {
    expect(
      await cniMain('{"name":"n","type":"flannel","dataDir":"/tmp/twill-none","subnetFile":"/nonexistent/subnet.env"}', {
        CNI_COMMAND: 'DEL',
        CNI_CONTAINERID: 'c404',
      }),
    ).toEqual({ out: '', code: 0 });
  });
});
