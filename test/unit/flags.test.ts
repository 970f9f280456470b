import { describe, expect, it } from 'vitest';
import { parseAgentFlags } from '../../controller/agent/flags.js';

describe('flanneld flags', () => {
  it("has flanneld's defaults", () => {
    const f = parseAgentFlags([]);
    expect(f).toMatchObject({
      etcdEndpoints: ['http://127.0.0.1:4001', 'http://127.0.0.1:2379'],
      etcdPrefix: '/coreos.com/network',
      subnetFile: '/run/flannel/subnet.env',
      subnetLeaseRenewMargin: 60,
      healthzIp: '0.0.0.0',
      healthzPort: 0,
      ipMasq: false,
      iptablesForwardRules: true,
      pinDir: '/sys/fs/bpf/twill',
      fastPath: 'auto',
      decapHook: 'auto',
      metricsPerPeer: true,
    });
  });

  it('takes --metrics-per-peer off by flag or variable, and names a bad value', () => {
    expect(parseAgentFlags(['--metrics-per-peer=false']).metricsPerPeer).toBe(false);
    expect(parseAgentFlags(['--metrics-per-peer', 'false']).metricsPerPeer).toBe(false);
    expect(parseAgentFlags([], { FLANNELD_METRICS_PER_PEER: 'false' }).metricsPerPeer).toBe(false);
    expect(() => parseAgentFlags(['--metrics-per-peer=some'])).toThrow(/--metrics-per-peer=some: not a boolean/);
  });

  it('takes --fast-path and --decap-hook in every spelling, a boolean with a separate true/false too', () => {
    expect(parseAgentFlags(['--fast-path=false']).fastPath).toBe(false);
    expect(parseAgentFlags(['--fast-path', 'false', '--iface', 'eth1'])).toMatchObject({ fastPath: false, iface: ['eth1'] });
    expect(parseAgentFlags(['--fast-path', '--iface', 'eth1'])).toMatchObject({ fastPath: true, iface: ['eth1'] });
    expect(parseAgentFlags([], { FLANNELD_FAST_PATH: 'false' }).fastPath).toBe(false);
    expect(parseAgentFlags(['--decap-hook', 'tc']).decapHook).toBe('tc');
    expect([parseAgentFlags([]).podSourceCheck, parseAgentFlags(['--pod-source-check=allow']).podSourceCheck]).toEqual(['drop', 'allow']);
    expect(['--fast-path=auto', '--fast-path auto', '--fast-path'].map((a) => parseAgentFlags(a.split(' ')).fastPath)).toEqual(['auto', 'auto', true]);
  });

  it('accepts Go flag spellings and repeatable --iface', () => {
    const f = parseAgentFlags(['-etcd-endpoints=http://10.0.0.1:2379', '--iface', 'eth0', '--iface=10.0.0.5', '-ip-masq', '--healthz-port', '8471']);
    expect(f.etcdEndpoints).toEqual(['http://10.0.0.1:2379']);
    expect(f.iface).toEqual(['eth0', '10.0.0.5']);
    expect(f.ipMasq).toBe(true);
    expect(f.healthzPort).toBe(8471);
  });

  it('takes IPv6 addresses for --public-ipv6 and --iface-can-reach', () => {
    expect(parseAgentFlags(['--public-ipv6', 'fd00::1', '--iface-can-reach=2001:db8::1'])).toMatchObject({
      publicIpv6: 'fd00::1',
      ifaceCanReach: '2001:db8::1',
    });
  });

  it('reads FLANNELD_* variables, and a flag beats its variable', () => {
    const env = { FLANNELD_ETCD_PREFIX: '/my/net', FLANNELD_IP_MASQ: 'true', FLANNELD_HEALTHZ_PORT: '9000' };
    const f = parseAgentFlags(['--healthz-port=9001'], env);
    expect(f).toMatchObject({ etcdPrefix: '/my/net', ipMasq: true, healthzPort: 9001 });
  });

  it.each([
    [['--subnet-lease-renew-margin', '0'], /--subnet-lease-renew-margin 0: must be between 1 and 1439/],
    [['--healthz-port=http'], /--healthz-port http: not an integer/],
    [['--public-ip', '10.0.0'], /--public-ip 10.0.0: not an IPv4 address/],
    [['--public-ipv6', '10.0.0.1'], /--public-ipv6 10.0.0.1: not an IPv6 address/],
    [['--iface-can-reach', 'fd00::1::2'], /--iface-can-reach fd00::1::2: not an IPv4 or IPv6 address/],
    [['--etcd-endpoints', 'localhost:2379'], /endpoint localhost:2379 is not http\(s\):\/\/host:port/],
    [['--ip-masq=maybe'], /--ip-masq=maybe: not a boolean/],
    [['--etcd-certfile', '/c.pem'], /--etcd-certfile and --etcd-keyfile go together/],
    [['--kube-annotation-prefix', 'Not_An_FQDN'], /--kube-annotation-prefix Not_An_FQDN: a prefix must be in the format fqdn/],
    [['--kube-api-url', 'apiserver:6443'], /--kube-api-url apiserver:6443: must be an http\(s\):\/\/ URL/],
    [['--frobnicate'], /unknown flag --frobnicate/],
    [['--iface'], /--iface needs a value/],
    [['--dataplane=ebpf'], /--dataplane ebpf: must be bpf, kernel or auto/],
    [['--iptables-resync=0'], /--iptables-resync 0: must be between 1 and 86400/],
    [['--iptables-forward-rules', 'no'], /unexpected argument "no"/],
    [['--decap-hook=generic'], /--decap-hook generic: must be auto, xdp or tc/],
    [['--pod-source-check=warn'], /--pod-source-check warn: must be drop or allow/],
    [['--fast-path=off'], /--fast-path=off: not a boolean or auto/],
  ])('rejects %j naming the flag', (argv, message) => {
    expect(() => parseAgentFlags(argv)).toThrow(message);
  });

  it("has flanneld's iptables defaults and takes them off as flanneld does", () => {
    expect(parseAgentFlags([])).toMatchObject({ ipMasqFullyRandomDisable: false, iptablesResync: 5, iptablesForwardRules: true });
    expect(parseAgentFlags(['--iptables-forward-rules=false', '--iptables-resync', '30', '--ip-masq-fully-random-disable'])).toMatchObject({
      ipMasqFullyRandomDisable: true,
      iptablesResync: 30,
      iptablesForwardRules: false,
    });
  });

  it('names the variable when the bad value came from the environment', () => {
    expect(() => parseAgentFlags([], { FLANNELD_SUBNET_LEASE_RENEW_MARGIN: '5000' })).toThrow(
      /FLANNELD_SUBNET_LEASE_RENEW_MARGIN 5000: must be between 1 and 1439/,
    );
  });

  it("accepts klog's flags as flanneld units and manifests spell them", () => {
    expect(parseAgentFlags(['-logtostderr', '-alsologtostderr', '-vmodule=main=2,subnet=3', '-v=3'])).toMatchObject({
      logtostderr: true,
      alsologtostderr: true,
      vmodule: 'main=2,subnet=3',
      v: 3,
    });
    expect(parseAgentFlags(['--v', '2', '--iface', 'eth1'])).toMatchObject({ v: 2, iface: ['eth1'] });
    expect(parseAgentFlags(['-v', '--iface', 'eth1'])).toMatchObject({ v: 1, iface: ['eth1'] });
    expect(parseAgentFlags(['-v']).v).toBe(1);
    expect(parseAgentFlags(['-logtostderr=false']).logtostderr).toBe(false);
    expect(() => parseAgentFlags(['-vmodule=main'])).toThrow(/--vmodule main: expected pattern=N/);
    expect(() => parseAgentFlags(['-v=x'])).toThrow(/--v x: not an integer/);
  });
});
