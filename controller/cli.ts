import { UsageError } from './cli/args.js';
import { logger, setLogLevel } from './util/log.js';

const log = logger('cli');

const help = `twill: an eBPF VXLAN dataplane for flannel networks

  twill agent [flanneld flags]                 the node agent (etcd leases -> BPF maps)
  twill lab up --nodes N [--pods-per-node K]   multi-node lab in network namespaces
  twill lab status [--json] | twill lab down | twill lab pod add --node N | twill lab pod del NAME
  twill dataplane attach|detach|sync ...       load, upgrade or remove a node's datapath
  twill maps [--pin-dir DIR] [--json]          decode the pinned BPF maps
  twill status [--pin-dir DIR] [--healthz H:P] one node's lease, peers, counters, attach points (no etcd)
  twill probe [--iface IF] [--json]            what this kernel offers twill, and what auto picks
  twill cni install [--dir D] [--name flannel] install the flannel-compatible CNI plugin
  twill docker-opts [--subnet-file F]          Docker's --bip/--mtu/--ip-masq from the subnet file
  twill bench [--reps 3] [--modes veth,wire]   twill vs kernel VXLAN vs host-gw vs raw veth
  twill version

Logs are JSON on stderr, warnings and errors only; -v or TWILL_LOG=info|debug for more.`;

async function main(argv: string[]): Promise<number> {
  if (argv[0] !== 'agent' && argv.includes('-v')) {
    setLogLevel('info');
    argv = argv.filter((a) => a !== '-v');
  }
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'agent':
      return (await import('./cli/agent.js')).agentCli(rest);
    case 'dataplane':
      return (await import('./cli/dataplane.js')).dataplaneCli(rest);
    case 'bench':
      return (await import('./cli/bench.js')).benchCli(rest);
    case 'cni':
      return (await import('./cli/cni.js')).cniCli(rest);
    case 'docker-opts':
      return (await import('./cli/cni.js')).dockerOptsCli(rest);
    case 'maps':
      return (await import('./cli/maps.js')).mapsCli(rest);
    case 'status':
      return (await import('./cli/status.js')).statusCli(rest);
    case 'probe':
      return (await import('./cli/probe.js')).probeCli(rest);
    case 'lab':
      return (await import('./cli/lab.js')).labCommand(rest);
    case 'version':
    case '--version':
      console.log('twill 0.1.0');
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(help);
      return cmd === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${cmd}\n\n${help}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`twill: ${err.message}`);
      process.exit(2);
    }
    // The message already carries the context (and a BpfError its verifier log); the stack only with -v.
    log.info('command failed', { stack: err instanceof Error ? err.stack : undefined });
    console.error(`twill: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
