import { FlagError, parseAgentFlags } from '../agent/flags.js';
import { runAgent } from '../agent/agent.js';
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
    console.log('twill 0.1.0 (flanneld-compatible agent, etcd subnet manager, vxlan and host-gw backends)');
    return 0;
  }
  return runAgent(flags);
}
