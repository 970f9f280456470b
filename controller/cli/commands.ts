import type { OptTable } from './args.js';
import * as o from './options.js';

/**
 * Every command twill answers to. The dispatcher finds commands here and nowhere else, so a
 * command cannot be reachable without a summary and a flag table for its help.
 */
interface Command {
  /** the words after `twill`, e.g. 'lab pod add' */
  name: string;
  /** positional arguments, for the usage line */
  args?: string;
  summary: string;
  flags: OptTable;
  run(argv: string[]): Promise<number>;
}

const lab = async (sub: string[], argv: string[]) => (await import('./lab.js')).labCommand([...sub, ...argv]);
const dataplane = async (sub: string, argv: string[]) => (await import('./dataplane.js')).dataplaneCli([sub, ...argv]);

export const commands: readonly Command[] = [
  {
    name: 'agent',
    summary: 'the node agent: etcd leases -> BPF maps; takes flanneld flags (-name or --name) and FLANNELD_* variables',
    flags: o.agentOpts,
    run: async (a) => (await import('./agent.js')).agentCli(a),
  },
  { name: 'lab up', summary: 'a multi-node lab in network namespaces: etcd, agents, pods', flags: o.labUpOpts, run: (a) => lab(['up'], a) },
  { name: 'lab status', summary: "a lab's nodes, agents and pods", flags: o.labStatusOpts, run: (a) => lab(['status'], a) },
  { name: 'lab demo', summary: 'every cross-node pod pair pings, one TCP transfer per node pair', flags: o.labNameOpt, run: (a) => lab(['demo'], a) },
  { name: 'lab down', summary: "removes a lab's namespaces, pins, processes and state", flags: o.labNameOpt, run: (a) => lab(['down'], a) },
  { name: 'lab pod add', summary: 'adds a pod to a lab node through the CNI plugin', flags: o.labPodOpts, run: (a) => lab(['pod', 'add'], a) },
  { name: 'lab pod del', args: 'NAME', summary: 'removes a lab pod through the CNI plugin', flags: o.labNameOpt, run: (a) => lab(['pod', 'del'], a) },
  {
    name: 'dataplane attach',
    summary: "loads or upgrades a node's datapath (run in the node's network namespace)",
    flags: o.attachOpts,
    run: (a) => dataplane('attach', a),
  },
  { name: 'dataplane detach', summary: "removes a node's datapath", flags: o.detachOpts, run: (a) => dataplane('detach', a) },
  { name: 'dataplane sync', summary: 'programs peers from a JSON lease list, without etcd', flags: o.syncOpts, run: (a) => dataplane('sync', a) },
  { name: 'maps', summary: 'decodes the pinned BPF maps (no etcd needed)', flags: o.mapsOpts, run: async (a) => (await import('./maps.js')).mapsCli(a) },
  {
    name: 'monitor',
    summary:
      'datapath drops (reason, hook, outer and inner addresses, peer) and sampled path decisions as they happen; events cost nothing while nobody listens',
    flags: o.monitorOpts,
    run: async (a) => (await import('./monitor.js')).monitorCli(a),
  },
  {
    name: 'status',
    summary: "one node's lease, peers, counters and attach points (no etcd needed)",
    flags: o.statusOpts,
    run: async (a) => (await import('./status.js')).statusCli(a),
  },
  {
    name: 'probe',
    summary: 'what this kernel offers twill (tcx, helpers, conntrack kfuncs, BTF, XDP), and what --dataplane auto picks',
    flags: o.probeOpts,
    run: async (a) => (await import('./probe.js')).probeCli(a),
  },
  {
    name: 'uninstall',
    summary: 'removes everything twill put on this node (run in its network namespace, with the agent stopped) and says what',
    flags: o.uninstallOpts,
    run: async (a) => (await import('./uninstall.js')).uninstallCli(a),
  },
  {
    name: 'cni install',
    summary: 'installs the flannel-compatible CNI plugin',
    flags: o.cniInstallOpts,
    run: async (a) => (await import('./cni.js')).cniCli(['install', ...a]),
  },
  {
    name: 'docker-opts',
    summary: "Docker's --bip, --ip-masq and --mtu from the subnet file, as flannel's mk-docker-opts.sh writes them",
    flags: o.dockerOptsOpts,
    run: async (a) => (await import('./cni.js')).dockerOptsCli(a),
  },
  {
    name: 'bench',
    summary: 'twill against kernel VXLAN, host-gw and raw veth',
    flags: o.benchOpts,
    run: async (a) => (await import('./bench.js')).benchCli(a),
  },
];

const words = (c: Command) => c.name.split(' ');

/** The command `argv` names (the longest match) and the arguments after its name. */
export function findCommand(argv: readonly string[]): { command: Command; rest: string[] } | undefined {
  let best: Command | undefined;
  for (const c of commands) if (words(c).every((w, i) => argv[i] === w) && (!best || words(c).length > words(best).length)) best = c;
  return best && { command: best, rest: argv.slice(words(best).length) };
}

/** Commands under a group such as `lab` or `lab pod`; empty if `prefix` is no group. */
export function subcommands(prefix: readonly string[]): Command[] {
  return commands.filter((c) => words(c).length > prefix.length && prefix.every((w, i) => words(c)[i] === w));
}

function flagRows(table: OptTable): string[] {
  return Object.entries(table).map(([name, s]) => {
    // A one-letter name is written as it is typed: -v.
    const long = name.length === 1 ? `-${name}` : `${s.short ? `-${s.short}, ` : ''}--${name}`;
    const flag = `${long}${s.type === 'boolean' ? '' : ` <${s.type}>`}`;
    const def = s.required ? ' (required)' : s.default !== undefined && s.default !== '' && s.default !== false ? ` (default ${s.default})` : '';
    return `  ${flag.padEnd(36)} ${s.describe}${def}`;
  });
}

export function commandHelp(c: Command): string {
  const global = c.name === 'agent' ? { 'log-format': o.globalOpts['log-format'] } : o.globalOpts;
  return [
    `usage: twill ${c.name}${Object.keys(c.flags).length ? ' [flags]' : ''}${c.args ? ` ${c.args}` : ''}`,
    '',
    c.summary,
    '',
    'flags:',
    ...flagRows(c.flags),
    'global flags:',
    ...flagRows(global),
  ].join('\n');
}

export function groupHelp(prefix: readonly string[]): string {
  const subs = subcommands(prefix);
  const width = Math.max(...subs.map((c) => c.name.length));
  return [
    `usage: twill ${prefix.join(' ')} <subcommand> [flags]`,
    '',
    'subcommands:',
    ...subs.map((c) => `  twill ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    `twill ${prefix.join(' ')} <subcommand> --help lists its flags.`,
  ].join('\n');
}

export function topHelp(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'twill: an eBPF VXLAN dataplane for flannel networks',
    '',
    ...commands.map((c) => `  twill ${c.name.padEnd(width)}  ${c.summary}`),
    `  twill ${'version'.padEnd(width)}  the version (also --version)`,
    '',
    'twill <command> --help lists the flags of a command.',
    'Logs go to stderr as text (--log-format json for pipelines), warnings and errors only except for the agent; -v or TWILL_LOG=info|debug for more.',
  ].join('\n');
}
