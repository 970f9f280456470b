import path from 'node:path';
import { describeStep, planUninstall, type UninstallOptions } from '../uninstall/plan.js';
import { executeStep, findOnNode } from '../uninstall/node.js';
import { parseArgs, UsageError } from './args.js';
import { uninstallOpts } from './options.js';
import { TUNNEL_DEVICE } from '../dataplane/spec.js';

/** What `--json` prints: every list is there, empty when there was nothing. */
export interface UninstallReport {
  pinDir: string;
  dryRun: boolean;
  /** a running agent was found: nothing was done */
  refused?: string;
  /** dry run: what would go; otherwise what went, one line each */
  removed: string[];
  kept: { name: string; why: string }[];
}

/** `twill uninstall`: removes twill from a node, after its agent stopped; a second run finds nothing. */
export async function uninstallCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, uninstallOpts);
  if (o._.length) throw new UsageError(`unexpected argument ${o._[0]}`);
  if (!o['pin-dir'].startsWith('/sys/fs/bpf/')) throw new UsageError(`--pin-dir ${o['pin-dir']}: not a directory under /sys/fs/bpf`);
  if (!/^[a-z][a-z0-9-]*$/.test(o['cni-plugin'])) throw new UsageError(`--cni-plugin ${o['cni-plugin']}: not a plugin name`);
  for (const flag of ['subnet-file', 'cni-bin-dir'] as const) if (!path.isAbsolute(o[flag])) throw new UsageError(`--${flag} ${o[flag]}: not an absolute path`);
  for (const flag of ['cni-conf', 'install-dir'] as const)
    if (o[flag] !== '' && !path.isAbsolute(o[flag])) throw new UsageError(`--${flag} ${o[flag]}: not an absolute path`);
  const opts: UninstallOptions = {
    pinDir: o['pin-dir'].replace(/\/+$/, ''),
    subnetFile: o['subnet-file'],
    cniPlugin: path.join(o['cni-bin-dir'], o['cni-plugin']),
    cniConf: o['cni-conf'],
    installDir: o['install-dir'],
    keepFlannel: o['keep-flannel'],
  };
  const plan = planUninstall(await findOnNode(opts, o['overlay-device'], TUNNEL_DEVICE), opts);
  const report: UninstallReport = { pinDir: opts.pinDir, dryRun: o['dry-run'], refused: plan.refusal, removed: [], kept: plan.kept };
  if (!plan.refusal) {
    if (o['dry-run']) report.removed = plan.steps.map(describeStep);
    else for (const step of plan.steps) report.removed.push(...(await executeStep(step, opts, o['overlay-device'])));
  }
  if (o.json) console.log(JSON.stringify(report, null, 2));
  else printReport(report);
  return plan.refusal ? 1 : 0;
}

function printReport(r: UninstallReport): void {
  if (r.refused) {
    console.error(`twill uninstall: refused: ${r.refused}`);
    return;
  }
  const verb = r.dryRun ? 'would remove' : 'removed';
  if (r.removed.length === 0) console.log(`nothing to remove: no trace of twill for ${r.pinDir} on this node`);
  for (const line of r.removed) console.log(`${verb}  ${line}`);
  for (const k of r.kept) console.log(`kept     ${k.name}: ${k.why}`);
}
