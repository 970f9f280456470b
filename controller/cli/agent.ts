import { FlagError, parseAgentFlags } from '../agent/flags.js';
import { runAgent } from '../agent/agent.js';
import { logLevelFromEnv, setLogLevel } from '../util/log.js';
import { twillVersion } from '../util/paths.js';
import { UsageError } from './args.js';

/** `twill agent`: flanneld's flags and FLANNELD_* variables. */
export async function agentCli(argv: string[]): Promise<number> {
  let flags;
  try {
    flags = parseAgentFlags(argv, process.env);
  } catch (err) {
    if (err instanceof FlagError) throw new UsageError(err.message);
    throw err;
  }
  if (flags.version) {
    console.log(`twill ${twillVersion()} (flanneld-compatible agent, etcd subnet manager, vxlan and host-gw backends)`);
    return 0;
  }
  // As flanneld's klog does, the agent says at info what an operator follows (leases, peers,
  // the datapath); -v=2 and more add the detail.
  if (!logLevelFromEnv()) setLogLevel(flags.v >= 2 ? 'debug' : 'info');
  return runAgent(flags);
}
