import { existsSync } from 'node:fs';
import { runBench } from '../bench/run.js';
import { parseArgs, UsageError } from './args.js';
import { benchOpts } from './options.js';
import { shellWord } from '../util/exec.js';

/** `twill bench` (also `npm run bench`): the side-by-side datapath benchmark. */
export async function benchCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, benchOpts);
  const modes = o.modes.split(',');
  if (o.modes !== '' && modes.some((m) => m !== 'veth' && m !== 'wire')) throw new UsageError(`--modes ${o.modes}: expected veth and/or wire`);
  if (o.modes === '') modes.length = 0;
  if (o.reps < 1 || o.seconds < 1) throw new UsageError('--reps and --seconds must be at least 1');
  if (!Number.isInteger(o['cni-pods']) || o['cni-pods'] < 0) throw new UsageError(`--cni-pods ${o['cni-pods']}: a whole number, 0 to skip`);
  for (const flag of ['kube-nodes', 'kube-annotations'] as const)
    if (!Number.isInteger(o[flag]) || o[flag] < 0) throw new UsageError(`--${flag} ${o[flag]}: a whole number, 0 to skip`);
  const nodeProfiles = o.nodes.split(',');
  if (nodeProfiles.some((n) => n !== 'bare' && n !== 'kube-proxy')) throw new UsageError(`--nodes ${o.nodes}: expected bare and/or kube-proxy`);
  if (nodeProfiles.includes('kube-proxy') && nodeProfiles.indexOf('kube-proxy') < nodeProfiles.indexOf('bare'))
    throw new UsageError(`--nodes ${o.nodes}: bare must come first (kube-proxy's rules stay once added)`);
  const baselineSubjects = o['baseline-variants'].split(',');
  if (baselineSubjects.some((v) => v !== 'twill' && v !== 'twill-v6'))
    throw new UsageError(`--baseline-variants ${o['baseline-variants']}: expected twill and/or twill-v6`);
  const baseline = o['baseline-objects'] || undefined;
  if (baseline && !existsSync(`${baseline}/decap.bpf.o`))
    throw new UsageError(`--baseline-objects ${baseline}: no decap.bpf.o there (build one with scripts/bpf-objects-at.sh REV)`);
  // A comparison with a baseline is not the benchmark of record: it never replaces BENCHMARKS.md.
  const out = o.out && !(baseline && o.out === benchOpts.out.default) ? o.out : undefined;
  const doc = await runBench(
    {
      reps: o.reps,
      seconds: o.seconds,
      modes: modes as ('veth' | 'wire')[],
      out,
      // Quoted where a shell needs it (an empty value such as --modes ''), so the report's command runs again as printed.
      command: `twill bench ${argv.map(shellWord).join(' ')}`.trim(),
      maxBackground: o['max-background'],
      leases: o.leases,
      puts: o.puts,
      kubeNodes: o['kube-nodes'],
      kubeAnnotations: o['kube-annotations'],
      cniPods: o['cni-pods'],
      cniLab: { name: o['cni-lab'], underlayCidr: o['cni-underlay'] },
      profile: o.profile,
      nodeProfiles: nodeProfiles as ('bare' | 'kube-proxy')[],
      baselineObjects: baseline,
      baselineSubjects: baselineSubjects as ('twill' | 'twill-v6')[],
    },
    (m) => console.error(m),
  );
  console.log(doc);
  return 0;
}
