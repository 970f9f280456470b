import { describe, expect, it } from 'vitest';
import {
  apiserverArgs,
  controllerManagerArgs,
  controllerManagerPort,
  firstServiceIp,
  httpsUrl,
  kubeconfig,
  logTail,
  type KubeControlPlaneOptions,
} from '../../controller/lab/kube-control-plane.js';

const single: KubeControlPlaneOptions = {
  stateDir: '/s',
  etcdEndpoint: 'http://127.0.0.1:23791',
  clusterCidr: '10.244.0.0/16',
  nodeCidrMaskSize: 24,
  serviceCidr: '10.96.0.0/12',
  listen: { address: '127.0.0.1', port: 16443 },
};
const dual: KubeControlPlaneOptions = { ...single, clusterCidr6: 'fd00:10:244::/56', nodeCidrMaskSize6: 64, serviceCidr6: 'fd00:10:96::/112' };

/** flag -> value, for the --flag=value arguments */
const flags = (args: string[]) => Object.fromEntries(args.map((a) => /^--([^=]+)(?:=(.*))?$/.exec(a)!).map((m) => [m[1], m[2] ?? true]));

describe('the Kubernetes control plane arguments', () => {
  it('points the API server at the etcd, the address and the service range, with files under the state dir', () => {
    const a = flags(apiserverArgs(single));
    expect(a).toMatchObject({
      'etcd-servers': 'http://127.0.0.1:23791',
      'etcd-prefix': '/registry',
      'bind-address': '127.0.0.1',
      'advertise-address': '127.0.0.1',
      'secure-port': '16443',
      'service-cluster-ip-range': '10.96.0.0/12',
      'client-ca-file': '/s/ca.pem',
      'service-account-key-file': '/s/service-account.pub',
      'service-account-signing-key-file': '/s/service-account.key',
    });
    expect(flags(apiserverArgs({ ...dual, etcdPrefix: '/other' }))).toMatchObject({
      'service-cluster-ip-range': '10.96.0.0/12,fd00:10:96::/112',
      'etcd-prefix': '/other',
    });
  });

  it('publishes no endpoint for the `kubernetes` Service on loopback, which Kubernetes refuses there', () => {
    expect(flags(apiserverArgs(single))['endpoint-reconciler-type']).toBe('none');
    expect(flags(apiserverArgs({ ...single, listen: { address: '::1', port: 16443 } }))['endpoint-reconciler-type']).toBe('none');
    expect(flags(apiserverArgs({ ...single, listen: { address: '192.168.150.10', port: 6443 } }))['endpoint-reconciler-type']).toBeUndefined();
  });

  it('has the controller manager allocate node CIDRs with the node IPAM controller, one mask for a single stack', () => {
    const a = flags(controllerManagerArgs(single));
    expect(a).toMatchObject({
      'allocate-node-cidrs': true,
      'cluster-cidr': '10.244.0.0/16',
      'node-cidr-mask-size': '24',
      controllers: 'node-ipam-controller',
      'secure-port': '16444',
    });
    expect(a['node-cidr-mask-size-ipv4']).toBeUndefined();
    expect(controllerManagerPort(single)).toBe(16444);
  });

  it('gives a dual-stack cluster both CIDRs and a mask per family (Kubernetes refuses the single mask there)', () => {
    const a = flags(controllerManagerArgs(dual));
    expect(a).toMatchObject({
      'cluster-cidr': '10.244.0.0/16,fd00:10:244::/56',
      'node-cidr-mask-size-ipv4': '24',
      'node-cidr-mask-size-ipv6': '64',
      'service-cluster-ip-range': '10.96.0.0/12,fd00:10:96::/112',
    });
    expect(a['node-cidr-mask-size']).toBeUndefined();
    expect(flags(controllerManagerArgs({ ...dual, nodeCidrMaskSize6: undefined }))['node-cidr-mask-size-ipv6']).toBe('64');
    expect(flags(controllerManagerArgs({ ...dual, controllers: ['node-ipam-controller', 'serviceaccount-controller'] })).controllers).toBe(
      'node-ipam-controller,serviceaccount-controller',
    );
  });

  it('names the first address of each service range (the `kubernetes` Service) and brackets IPv6 in URLs', () => {
    expect(firstServiceIp('10.96.0.0/12')).toBe('10.96.0.1');
    expect(firstServiceIp('10.96.7.9/16')).toBe('10.96.0.1');
    expect(firstServiceIp('fd00:10:96::/112')).toBe('fd00:10:96::1');
    expect(firstServiceIp('fd00:0:0:1:0:0:0:0/64')).toBe('fd00:0:0:1::1');
    expect(() => firstServiceIp('10.0.0.0/31')).toThrow(/10\.0\.0\.0\/31/);
    expect(httpsUrl('127.0.0.1', 6443)).toBe('https://127.0.0.1:6443');
    expect(httpsUrl('fd00::1', 6443)).toBe('https://[fd00::1]:6443');
  });

  it("quotes klog's error lines from a log when it has any, else its last lines", () => {
    const log = ['I1206 14:59:11.1 a.go:1] starting', 'E1206 14:59:11.2 run.go:72] "command failed"', 'W1206 14:59:11.3 b.go:2] skipping'].join('\n');
    expect(logTail(log)).toBe('E1206 14:59:11.2 run.go:72] "command failed"');
    expect(logTail('one\ntwo\nthree\n', 2)).toBe('two\nthree');
  });

  it('writes a kubeconfig that names its certificate files', () => {
    const k = JSON.parse(kubeconfig('https://127.0.0.1:16443', '/s/ca.pem', 'twill-admin', '/s/admin.pem', '/s/admin.key'));
    expect(k['current-context']).toBe('twill');
    expect(k.clusters[0].cluster).toEqual({ server: 'https://127.0.0.1:16443', 'certificate-authority': '/s/ca.pem' });
    expect(k.users[0]).toEqual({ name: 'twill-admin', user: { 'client-certificate': '/s/admin.pem', 'client-key': '/s/admin.key' } });
  });
});
