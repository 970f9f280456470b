import { choiceList, DATAPLANES, DECAP_HOOKS, POD_SOURCE_CHECKS, type Dataplane, type DecapHook, type PodSourceCheck } from '../config/choices.js';
import { OVERLAY_DEVICE } from '../dataplane/spec.js';
import { parseIpv4 } from '../net/ipv4.js';
import { parseIpv6 } from '../net/ipv6.js';
import { kubeAnnotations } from '../subnet/kube-nodes.js';

/*
 * flanneld's command line, parsed the way Go's flag package does (-name or --name, =value or a
 * separate value, booleans as -name or -name=bool), each flag also settable as
 * FLANNELD_<UPPER_SNAKE> in the environment; the flag wins. Pure: argv and env in, options out.
 * One liberty: a boolean followed by a separate `true` or `false` takes it (`--fast-path false`),
 * where Go would set the flag and stop parsing at the stray word, silently ignoring the rest.
 */

export interface AgentFlags {
  etcdEndpoints: string[];
  etcdPrefix: string;
  etcdCafile?: string;
  etcdCertfile?: string;
  etcdKeyfile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach?: string;
  publicIp?: string;
  publicIpv6?: string;
  subnetFile: string;
  subnetLeaseRenewMargin: number;
  ipMasq: boolean;
  ipMasqFullyRandomDisable: boolean;
  iptablesResync: number;
  iptablesForwardRules: boolean;
  healthzIp: string;
  healthzPort: number;
  version: boolean;
  v: number;
  logtostderr: boolean;
  alsologtostderr: boolean;
  vmodule?: string;
  // flanneld's Kubernetes subnet manager
  kubeSubnetMgr: boolean;
  kubeApiUrl?: string;
  kubeconfigFile?: string;
  kubeAnnotationPrefix: string;
  netConfigPath: string;
  setNodeNetworkUnavailable: boolean;
  // twill's own
  pinDir: string;
  dataplane: Dataplane;
  subnetLeaseTtl: number;
  overlayDevice: string;
  decapHook: DecapHook;
  /** auto: on, but held off while the FORWARD chain has rules it would bypass (dataplane/forward-policy.ts) */
  fastPath: boolean | 'auto';
  podSourceCheck: PodSourceCheck;
  metricsPerPeer: boolean;
}

export class FlagError extends Error {
  override name = 'FlagError';
}

/** boolOrAuto: a boolean, or `auto` (the agent decides, and may change its mind) */
type Kind = 'string' | 'list' | 'int' | 'bool' | 'boolOrAuto';
/** What a flag's text converts to, by its kind. */
type FlagValue = string | string[] | number | boolean;
interface Spec {
  key: keyof AgentFlags;
  kind: Kind;
  def?: FlagValue;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each check takes the type of its own kind
  check?: (v: any) => string | undefined;
}

const badEndpoint = (v: string[]) => {
  const bad = v.find((e) => !/^https?:\/\/[^/]+$/.test(e));
  return bad === undefined ? (v.length ? undefined : 'no endpoint given') : `endpoint ${bad} is not http(s)://host:port`;
};
const ip = (v: string) => (parseIpv4(v) === undefined ? 'not an IPv4 address' : undefined);
const ip6 = (v: string) => (parseIpv6(v) === undefined ? 'not an IPv6 address' : undefined);
const anyIp = (v: string) => (parseIpv4(v) === undefined && parseIpv6(v) === undefined ? 'not an IPv4 or IPv6 address' : undefined);
const annotationPrefix = (v: string) => {
  try {
    kubeAnnotations(v);
    return undefined;
  } catch (err) {
    return (err as Error).message.replace(/^--kube-annotation-prefix "[^"]*": /, '');
  }
};
const range = (lo: number, hi: number) => (v: number) => (v < lo || v > hi ? `must be between ${lo} and ${hi}` : undefined);
const oneOf = (choices: readonly string[]) => (v: string) => (choices.includes(v) ? undefined : `must be ${choiceList(choices)}`);

const specs: Record<string, Spec> = {
  'etcd-endpoints': { key: 'etcdEndpoints', kind: 'list', def: ['http://127.0.0.1:4001', 'http://127.0.0.1:2379'], check: badEndpoint },
  'etcd-prefix': { key: 'etcdPrefix', kind: 'string', def: '/coreos.com/network', check: (v: string) => (v.startsWith('/') ? undefined : 'must start with /') },
  'etcd-cafile': { key: 'etcdCafile', kind: 'string' },
  'etcd-certfile': { key: 'etcdCertfile', kind: 'string' },
  'etcd-keyfile': { key: 'etcdKeyfile', kind: 'string' },
  'etcd-username': { key: 'etcdUsername', kind: 'string' },
  'etcd-password': { key: 'etcdPassword', kind: 'string' },
  iface: { key: 'iface', kind: 'list', def: [] },
  'iface-regex': { key: 'ifaceRegex', kind: 'list', def: [] },
  'iface-can-reach': { key: 'ifaceCanReach', kind: 'string', check: anyIp },
  'public-ip': { key: 'publicIp', kind: 'string', check: ip },
  'public-ipv6': { key: 'publicIpv6', kind: 'string', check: ip6 },
  'subnet-file': { key: 'subnetFile', kind: 'string', def: '/run/flannel/subnet.env' },
  'subnet-lease-renew-margin': { key: 'subnetLeaseRenewMargin', kind: 'int', def: 60, check: range(1, 1439) },
  'ip-masq': { key: 'ipMasq', kind: 'bool', def: false },
  'ip-masq-fully-random-disable': { key: 'ipMasqFullyRandomDisable', kind: 'bool', def: false },
  'iptables-resync': { key: 'iptablesResync', kind: 'int', def: 5, check: range(1, 86400) },
  'iptables-forward-rules': { key: 'iptablesForwardRules', kind: 'bool', def: true },
  'healthz-ip': { key: 'healthzIp', kind: 'string', def: '0.0.0.0', check: ip },
  'healthz-port': { key: 'healthzPort', kind: 'int', def: 0, check: range(0, 65535) },
  version: { key: 'version', kind: 'bool', def: false },
  v: { key: 'v', kind: 'int', def: 0, check: range(0, 10) },
  // klog's flags, in flanneld units and manifests: twill always logs to stderr, and its files are not flannel's.
  logtostderr: { key: 'logtostderr', kind: 'bool', def: true },
  alsologtostderr: { key: 'alsologtostderr', kind: 'bool', def: false },
  vmodule: { key: 'vmodule', kind: 'string', check: (v: string) => (/^([^=,]+=\d+)(,[^=,]+=\d+)*$/.test(v) ? undefined : 'expected pattern=N[,pattern=N...]') },
  'kube-subnet-mgr': { key: 'kubeSubnetMgr', kind: 'bool', def: false },
  'kube-api-url': { key: 'kubeApiUrl', kind: 'string', check: (v: string) => (/^https?:\/\/[^/]+/.test(v) ? undefined : 'must be an http(s):// URL') },
  'kubeconfig-file': { key: 'kubeconfigFile', kind: 'string' },
  'kube-annotation-prefix': { key: 'kubeAnnotationPrefix', kind: 'string', def: 'flannel.alpha.coreos.com', check: annotationPrefix },
  'net-config-path': { key: 'netConfigPath', kind: 'string', def: '/etc/kube-flannel/net-conf.json' },
  'set-node-network-unavailable': { key: 'setNodeNetworkUnavailable', kind: 'bool', def: true },
  'pin-dir': {
    key: 'pinDir',
    kind: 'string',
    def: '/sys/fs/bpf/twill',
    check: (v: string) => (v.startsWith('/sys/fs/bpf/') ? undefined : 'must be a directory under /sys/fs/bpf'),
  },
  dataplane: { key: 'dataplane', kind: 'string', def: 'auto', check: oneOf(DATAPLANES) },
  'subnet-lease-ttl': { key: 'subnetLeaseTtl', kind: 'int', def: 86400, check: range(10, 86400 * 30) },
  'overlay-device': { key: 'overlayDevice', kind: 'string', def: OVERLAY_DEVICE },
  'decap-hook': { key: 'decapHook', kind: 'string', def: 'auto', check: oneOf(DECAP_HOOKS) },
  'fast-path': { key: 'fastPath', kind: 'boolOrAuto', def: 'auto' },
  'pod-source-check': { key: 'podSourceCheck', kind: 'string', def: 'drop', check: oneOf(POD_SOURCE_CHECKS) },
  'metrics-per-peer': { key: 'metricsPerPeer', kind: 'bool', def: true },
};

function convert(name: string, spec: Spec, text: string): FlagValue {
  switch (spec.kind) {
    case 'string':
      return text;
    case 'list':
      return text
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
    case 'int':
      if (!/^-?\d+$/.test(text)) throw new FlagError(`--${name} ${text}: not an integer`);
      return Number(text);
    case 'boolOrAuto':
      if (text === 'auto') return text;
      if (!/^(1|0|t|f|true|false|TRUE|FALSE|True|False)$/.test(text)) throw new FlagError(`--${name}=${text}: not a boolean or auto`);
      return /^(1|t|true)$/i.test(text);
    case 'bool':
      if (!/^(1|0|t|f|true|false|TRUE|FALSE|True|False)$/.test(text)) throw new FlagError(`--${name}=${text}: not a boolean`);
      return /^(1|t|true)$/i.test(text);
  }
}

export function parseAgentFlags(argv: readonly string[], env: NodeJS.ProcessEnv = {}): AgentFlags {
  const fromFlags = new Map<string, FlagValue>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const m = /^--?([a-z0-9-]+)(?:=(.*))?$/s.exec(arg);
    if (!m) throw new FlagError(`unexpected argument ${JSON.stringify(arg)}: flags look like --name=value`);
    const [, name, inline] = m;
    const spec = specs[name];
    if (!spec) throw new FlagError(`unknown flag --${name}`);
    let text = inline;
    if (text === undefined) {
      if (spec.kind === 'bool') text = /^(true|false)$/.test(argv[i + 1] ?? '') ? argv[++i] : 'true';
      else if (spec.kind === 'boolOrAuto') text = /^(true|false|auto)$/.test(argv[i + 1] ?? '') ? argv[++i] : 'true';
      // klog's -v takes a level; alone (as operators type it) it means 1.
      else if (name === 'v') text = /^\d+$/.test(argv[i + 1] ?? '') ? argv[++i] : '1';
      else if (i + 1 < argv.length) text = argv[++i];
      else throw new FlagError(`--${name} needs a value`);
    }
    const value = convert(name, spec, text);
    if (spec.kind === 'list' && (name === 'iface' || name === 'iface-regex'))
      fromFlags.set(name, [...((fromFlags.get(name) as string[]) ?? []), ...(value as string[])]);
    else fromFlags.set(name, value);
  }
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const envName = `FLANNELD_${name.toUpperCase().replace(/-/g, '_')}`;
    let value: FlagValue | undefined;
    let source = `--${name}`;
    if (fromFlags.has(name)) value = fromFlags.get(name);
    else if (env[envName] !== undefined && env[envName] !== '') {
      source = envName;
      try {
        value = convert(name, spec, env[envName]);
      } catch (err) {
        throw new FlagError((err as Error).message.replace(`--${name}`, envName));
      }
    } else value = spec.def;
    if (value !== undefined && spec.check) {
      const problem = spec.check(value);
      if (problem) throw new FlagError(`${source} ${Array.isArray(value) ? value.join(',') : String(value)}: ${problem}`);
    }
    out[spec.key] = value;
  }
  const f = out as unknown as AgentFlags;
  if (Boolean(f.etcdCertfile) !== Boolean(f.etcdKeyfile)) throw new FlagError('--etcd-certfile and --etcd-keyfile go together: give both or neither');
  return f;
}

export const agentFlagNames = Object.keys(specs);

/** Each flag's kind and default, from the table the parser uses, so help cannot drift from it. */
export const agentFlagTable = Object.entries(specs).map(([name, s]) => ({ name, kind: s.kind, def: s.def }));
