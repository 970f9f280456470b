import { agentFlagTable } from '../agent/flags.js';
import type { OptSpec, OptTable } from './args.js';
import { FLANNEL_VXLAN_PORT } from '../net/vxlan.js';
import { OVERLAY_DEVICE } from '../dataplane/spec.js';
import { BACKENDS, choiceList, DECAP_HOOKS } from '../config/choices.js';

/*
 * The flag tables of twill's own commands. They live apart from the commands so that help can
 * read them without loading what the commands load (libbpf, etcd), and each command parses its
 * flags with the very table its help prints.
 */

const pinDir = (whose: string) => ({ type: 'string', default: '/sys/fs/bpf/twill', describe: `pin directory of ${whose}` }) as const;

export const mapsOpts = {
  'pin-dir': pinDir('the node'),
  json: { type: 'boolean', default: false, describe: 'machine-readable output' },
} satisfies OptTable;

export const monitorOpts = {
  'pin-dir': pinDir('the node'),
  json: { type: 'boolean', default: false, describe: 'one JSON object per event and line' },
  type: { type: 'string', default: 'drop', describe: 'drop (every counted drop), trace (sampled fast/stack path decisions) or all' },
  reason: {
    type: 'string',
    default: '',
    describe: 'only these reasons, comma-separated, named as twill maps names the counters (drop_bad_vni, conntrack, fast, ...)',
  },
  address: { type: 'string', default: '', describe: 'only events with an outer, inner or peer address in this IPv4/IPv6 address or CIDR' },
  'trace-sample': { type: 'number', default: 1, describe: 'trace one path decision in this many, chosen at random (1: every one)' },
  count: { type: 'number', default: 0, describe: 'stop after this many events (0: until Ctrl-C or SIGTERM)' },
} satisfies OptTable;

export const statusOpts = {
  'pin-dir': pinDir('the node'),
  'subnet-file': { type: 'string', default: '/run/flannel/subnet.env', describe: "the agent's subnet file" },
  healthz: { type: 'string', default: '', describe: "the agent's healthz address (host:port), to include its readiness" },
  json: { type: 'boolean', default: false, describe: 'machine-readable output' },
} satisfies OptTable;

export const cniInstallOpts = {
  dir: { type: 'string', default: '/opt/cni/bin', describe: 'CNI plugin directory' },
  name: { type: 'string', default: 'flannel', describe: 'plugin name: flannel (drop-in) or twill' },
} satisfies OptTable;

// mk-docker-opts.sh's one-letter options, so that units calling it can call twill instead.
export const dockerOptsOpts = {
  'subnet-file': { type: 'string', short: 'f', default: '/run/flannel/subnet.env', describe: 'subnet file written by the agent' },
  dest: { type: 'string', short: 'd', default: '/run/docker_opts.env', describe: 'file to write the options to, - for stdout' },
  key: { type: 'string', short: 'k', default: 'DOCKER_OPTS', describe: 'name of the combined variable' },
  combined: { type: 'boolean', short: 'c', default: false, describe: 'write the combined variable (alone, unless -i too)' },
  individual: { type: 'boolean', short: 'i', default: false, describe: 'write DOCKER_OPT_BIP, _IPMASQ, _MTU (alone, unless -c too)' },
  'no-ip-masq': { type: 'boolean', short: 'm', default: false, describe: 'leave out --ip-masq (for older Docker versions)' },
} satisfies OptTable;

export const benchOpts = {
  reps: { type: 'number', default: 3, describe: 'repetitions (the median is reported)' },
  seconds: { type: 'number', default: 3, describe: 'seconds per measurement' },
  modes: { type: 'string', default: 'veth,wire', describe: 'underlay modes: veth, wire' },
  out: { type: 'string', default: 'BENCHMARKS.md', describe: 'report file ("" for none)' },
  'max-background': { type: 'number', default: 0.1, describe: 'discard a sample when other programs took this share of the CPUs' },
  leases: { type: 'number', default: 10000, describe: 'leases in etcd for the control-plane run (0 skips it)' },
  profile: { type: 'boolean', default: true, describe: 'perf profiles of every variant (--profile=false to skip)' },
  puts: { type: 'number', default: 200, describe: 'single lease puts timed until they reach the map' },
  'kube-nodes': {
    type: 'number',
    default: 0,
    describe: 'Nodes registered and annotated through a real API server for the Kubernetes-mode control-plane run (0 skips it)',
  },
  'kube-annotations': { type: 'number', default: 200, describe: 'single Node annotations timed until they reach the map, in that run' },
  'cni-pods': {
    type: 'number',
    default: 20,
    describe: "pods added and deleted through twill's CNI plugin, and as many through its delegates alone (0 skips it)",
  },
  'cni-lab': {
    type: 'string',
    default: 'bn',
    describe: "name of the one-node lab the CNI plugin's cost is measured in (beside another lab of the same name it fails)",
  },
  'cni-underlay': { type: 'string', default: '192.168.106.0/24', describe: 'underlay of that lab' },
  nodes: {
    type: 'string',
    default: 'bare,kube-proxy',
    describe: "node profiles measured in turn: bare (as the lab makes them), kube-proxy (with kube-proxy's rules: conntrack active)",
  },
  'baseline-objects': {
    type: 'string',
    default: '',
    describe:
      "another build's BPF objects (scripts/bpf-objects-at.sh REV): measure only twill beside twill on these, and report new / baseline per repetition (never written to BENCHMARKS.md)",
  },
  'baseline-variants': { type: 'string', default: 'twill', describe: 'with --baseline-objects: twill and/or twill-v6' },
} satisfies OptTable;

export const attachOpts = {
  'pin-dir': pinDir('this node'),
  iface: { type: 'string', required: true, describe: 'underlay interface (XDP decap, encapsulated packets leave here)' },
  'public-ip': { type: 'string', required: true, describe: "this node's PublicIP" },
  'vtep-mac': { type: 'string', required: true, describe: "this node's VtepMAC" },
  subnet: { type: 'string', required: true, describe: "this node's subnet (CIDR)" },
  network: { type: 'string', required: true, describe: 'cluster network (CIDR)' },
  vni: { type: 'number', default: 1, describe: 'VXLAN VNI' },
  port: { type: 'number', default: FLANNEL_VXLAN_PORT, describe: 'VXLAN UDP port' },
  mtu: { type: 'number', describe: 'underlay MTU (default: the interface MTU)' },
  'overlay-device': { type: 'string', default: OVERLAY_DEVICE, describe: 'name of the overlay device' },
  hold: { type: 'boolean', default: false, describe: 'stay running after attaching, until a signal (as an agent does)' },
} satisfies OptTable;
export const detachOpts = { 'pin-dir': pinDir('this node') } satisfies OptTable;
export const syncOpts = { ...detachOpts, leases: { type: 'string', default: '-', describe: 'JSON file of leases, - for stdin' } } satisfies OptTable;

export const uninstallOpts = {
  'pin-dir': pinDir('the node'),
  'subnet-file': { type: 'string', default: '/run/flannel/subnet.env', describe: "the agent's subnet file; the CNI plugin's pod records beside it go too" },
  'cni-bin-dir': { type: 'string', default: '/opt/cni/bin', describe: 'where `twill cni install` put the plugin (removed only if twill wrote it)' },
  'cni-plugin': { type: 'string', default: 'flannel', describe: "the plugin's name there" },
  'cni-conf': {
    type: 'string',
    default: '',
    describe: 'a conflist to remove, e.g. /etc/cni/net.d/10-flannel.conflist (flannel uses the same file: none unless given)',
  },
  'install-dir': { type: 'string', default: '', describe: 'where the DaemonSet copies twill for the CNI plugin (/opt/twill): its copies are removed' },
  'overlay-device': { type: 'string', default: OVERLAY_DEVICE, describe: "the agent's --overlay-device" },
  'keep-flannel': {
    type: 'boolean',
    default: false,
    describe: 'leave what flanneld takes over (flannel.<VNI>, routes to peers, the subnet file, the FLANNEL-* chains): the rollback to flanneld',
  },
  'dry-run': { type: 'boolean', default: false, describe: 'say what would be removed, remove nothing' },
  json: { type: 'boolean', default: false, describe: 'machine-readable output' },
} satisfies OptTable;

export const labNameOpt = { name: { type: 'string', default: 'twl', describe: 'lab name (namespaces are <name>-...)' } } satisfies OptTable;
export const labUpOpts = {
  ...labNameOpt,
  nodes: { type: 'number', default: 3, describe: 'number of nodes' },
  'pods-per-node': { type: 'number', default: 2, describe: 'pods per node' },
  'kernel-nodes': { type: 'number', default: 0, describe: "how many nodes (the last ones) run twill's own copy of flannel's kernel VXLAN instead of BPF" },
  kube: {
    type: 'boolean',
    default: false,
    describe: 'Kubernetes mode: a real kube-apiserver and kube-controller-manager, a Node per lab node, and every daemon with --kube-subnet-mgr',
  },
  'flanneld-nodes': {
    type: 'number',
    default: 0,
    describe: "how many nodes (the last ones, after the kernel nodes) run the real flanneld, their pods made by flannel's CNI plugin",
  },
  'image-nodes': {
    type: 'number',
    default: 0,
    describe: "how many nodes (the first ones) run the agent of --image by podman, with the DaemonSet's host paths (scripts/image/build.sh builds it)",
  },
  image: { type: 'string', default: 'localhost/twill:dev', describe: "the container image of the --image-nodes, in podman's storage" },
  network: { type: 'string', default: '10.244.0.0/16', describe: 'cluster network' },
  'subnet-len': { type: 'number', default: 24, describe: 'node subnet length' },
  underlay: { type: 'string', default: '192.168.77.0/24', describe: 'underlay network (/24)' },
  'etcd-members': { type: 'number', default: 1, describe: 'etcd members: 1, or 3 for a cluster that survives losing one' },
  'fast-path': { type: 'boolean', default: true, describe: "the BPF agents' --fast-path: pod traffic bypasses the host stack where it may" },
  'decap-hook': { type: 'string', default: 'auto', describe: `the BPF agents' --decap-hook: ${choiceList(DECAP_HOOKS)}` },
  backend: { type: 'string', default: 'vxlan', describe: `the network config's Backend.Type: ${choiceList(BACKENDS)}` },
  'direct-routing': { type: 'boolean', default: false, describe: 'vxlan with DirectRouting: peers on the same L2 segment are routed without VXLAN' },
  'routed-nodes': { type: 'number', default: 0, describe: 'how many nodes (the last ones) sit on a second L2 segment, behind a router' },
  'ip-masq': {
    type: 'string',
    default: 'flanneld',
    describe: 'which nodes run with --ip-masq: flanneld (the flanneld nodes, as kube-flannel.yml runs it), all, or none',
  },
  'ip-family': { type: 'string', default: 'ipv4', describe: 'the pod network: ipv4, ipv6 or dual (dual-stack); with IPv6 the underlay is dual-stack' },
  'ipv6-network': { type: 'string', default: 'fd10:244::/56', describe: "the config's IPv6Network, /64 per node" },
} satisfies OptTable;
export const labStatusOpts = { ...labNameOpt, json: { type: 'boolean', default: false, describe: 'JSON output' } } satisfies OptTable;
export const labPodOpts = {
  ...labNameOpt,
  node: { type: 'string', required: true, describe: 'the node to add the pod to (n1, n2, ...)' },
  ip: { type: 'string', describe: 'the address to ask host-local for (a pod re-created with its old address)' },
} satisfies OptTable;

/** Flags every command takes; cli.ts takes them off the command line before the command sees it. */
export const globalOpts = {
  'log-format': { type: 'string', default: 'text', describe: 'log lines as text, or json for log pipelines (also TWILL_LOG_FORMAT)' },
  v: { type: 'boolean', short: 'v', default: false, describe: 'info-level logs (TWILL_LOG=info|debug as well); the agent takes -v=N' },
} satisfies OptTable;

/** One line per agent flag; the names, kinds and defaults come from the agent's parser. */
const agentFlagHelp: Record<string, string> = {
  'etcd-endpoints': 'etcd endpoints, comma-separated http(s)://host:port',
  'etcd-prefix': 'etcd prefix of the network config and leases',
  'etcd-cafile': 'CA certificate for etcd over TLS',
  'etcd-certfile': 'client certificate for etcd (with --etcd-keyfile)',
  'etcd-keyfile': 'client key for etcd (with --etcd-certfile)',
  'etcd-username': 'etcd user name',
  'etcd-password': 'etcd password',
  iface: 'interface (name or address) to use for the underlay; repeatable, first match wins',
  'iface-regex': 'regex of interface names or addresses to use; repeatable',
  'iface-can-reach': 'use the interface that routes to this address',
  'public-ip': "this node's PublicIP, when it differs from the interface's address",
  'public-ipv6': "this node's PublicIPv6, when it differs from the interface's address",
  'subnet-file': 'where to write the subnet file (FLANNEL_NETWORK, FLANNEL_SUBNET, ...)',
  'subnet-lease-renew-margin': 'renew the lease this many minutes before it expires',
  'ip-masq': 'masquerade traffic leaving the cluster network',
  'ip-masq-fully-random-disable': 'masquerade without --random-fully',
  'iptables-resync': 'seconds between checks of the iptables rules',
  'iptables-forward-rules': 'add FORWARD rules accepting the cluster network',
  'healthz-ip': 'address of /healthz, /readyz and /metrics',
  'healthz-port': 'port of /healthz, /readyz and /metrics (0: no server)',
  version: 'print the version and exit',
  v: 'log verbosity: 0 info, 2 and more debug (-v alone is 1)',
  logtostderr: "klog's flag, accepted for flanneld units: logs always go to stderr",
  alsologtostderr: "klog's flag, accepted for flanneld units: logs always go to stderr",
  vmodule: "klog's per-file verbosity, accepted for flanneld units and not applied (twill's files are not flannel's)",
  'kube-subnet-mgr': "take the subnet from this node's Node (spec.podCIDRs) and the peers from the other Nodes, as flanneld's Kubernetes mode",
  'kube-api-url': "the API server's URL; overrides the kubeconfig's (in a pod: not needed)",
  'kubeconfig-file': "kubeconfig of the API server (in a pod: not needed, the pod's service account is used)",
  'kube-annotation-prefix': "prefix of flannel's Node annotations (with at most one slash)",
  'net-config-path': 'the network config (net-conf.json) in Kubernetes mode',
  'set-node-network-unavailable': "clear the Node's NetworkUnavailable condition once ready (Kubernetes mode)",
  'pin-dir': 'bpffs directory for the pinned maps and links',
  dataplane: 'bpf, kernel (VXLAN as flanneld programs it) or auto (bpf where the kernel can)',
  'subnet-lease-ttl': 'seconds a new lease lives unless renewed',
  'overlay-device': 'name of the overlay device',
  'decap-hook': `where received VXLAN is decapsulated: ${choiceList(DECAP_HOOKS)}`,
  'fast-path': 'pod traffic bypasses the host stack where it may: true, false, or auto (on, but held off while the FORWARD chain has rules it would bypass)',
  'pod-source-check': "drop: a pod's packet from an address that is not one of its own is dropped at its veth; allow: the stack judges it, as in flannel",
  'metrics-per-peer': "/metrics has each peer's traffic counters (5 series per peer; false for large clusters)",
};

const agentKinds: Record<(typeof agentFlagTable)[number]['kind'], OptSpec['type']> = {
  string: 'string',
  list: 'string',
  int: 'number',
  bool: 'boolean',
  boolOrAuto: 'string',
};

export const agentOpts: OptTable = Object.fromEntries(
  agentFlagTable.map(({ name, kind, def }) => {
    const spec: OptSpec = { type: agentKinds[kind], describe: agentFlagHelp[name] ?? '' };
    if (def !== undefined && !(Array.isArray(def) && def.length === 0)) spec.default = Array.isArray(def) ? def.join(',') : def;
    return [name, spec];
  }),
);

export const probeOpts = {
  iface: { type: 'string', default: '', describe: 'underlay interface: also probe native XDP on its driver (attaches an XDP_PASS program for a moment)' },
  json: { type: 'boolean', default: false, describe: 'machine-readable output' },
} satisfies OptTable;
