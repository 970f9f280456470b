import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CNI_COMPILE_CACHE, cniCompileCacheDir, installCniPlugin } from '../cni/install.js';
import { delegateConfig } from '../cni/plugin.js';
import { labCniSetup } from '../lab/cni.js';
import { labDown, labUp } from '../lab/lab.js';
import { ip } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import { repoRoot, runtimeNode } from '../util/paths.js';
import { median, percentile } from './report.js';

/*
 * What twill's CNI plugin costs a pod: ADD and DEL through it (the `flannel` plugin the lab
 * installs, which reads the subnet file, records the pod and runs the delegates) against the
 * delegates alone (`bridge` with `host-local`, given the very config twill's plugin would hand
 * them), interleaved, on one lab node whose agent runs (so DEL also forgets the pod's map entry).
 * Two references run in the same rounds, since the machine's load moves absolute times: the
 * plugin's unbundled ES-module entry (what the bundle saves) and Node starting with nothing to
 * run (the floor of any plugin written for Node). The plugin runs both with Node's on-disk compile
 * cache (NODE_COMPILE_CACHE, warmed by one untimed call) and without, whichever the installed one
 * uses (CNI_COMPILE_CACHE) being `twill`, the other `otherCache`: the installed one must be the faster.
 * Every Node here is the pinned runtime the plugin runs on (runtimeNode).
 */

/** Issue 14: twill may add at most this much to a pod's ADD, at the median. */
const CNI_ADD_BUDGET_MS = 30;

interface CniTimes {
  add: number[];
  del: number[];
}

interface CniCostResult {
  n: number;
  twill: CniTimes;
  delegates: CniTimes;
  /** the same plugin run from tsc's ES modules (dist/controller/cni/main.js) instead of the bundle */
  unbundled?: CniTimes;
  /** `node -e 0` in the same environment: Node's own start-up and exit */
  nodeStart?: number[];
  /** whether `twill` (the installed plugin) used Node's compile cache */
  compileCache?: boolean;
  /** the same plugin with the compile cache the other way (on if the installed one has it off) */
  otherCache?: CniTimes;
  /** the Node version all of it ran on */
  nodeVersion?: string;
}

const LAB = { name: 'bn', underlayCidr: '192.168.106.0/24' };

async function timed(argv: string[], input: string, env: NodeJS.ProcessEnv, netns: string): Promise<number> {
  const started = performance.now();
  const res = await run(argv, { input, env, netns, allowFailure: true });
  const ms = performance.now() - started;
  if (res.code !== 0) throw new Error(`${argv[0]} ${env.CNI_COMMAND ?? argv.slice(1).join(' ')} failed: ${(res.stdout + res.stderr).trim()}`);
  return ms;
}

export async function cniCostBench(n: number, say: (m: string) => void, lab: { name: string; underlayCidr: string } = LAB): Promise<CniCostResult> {
  await labDown(lab.name);
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'twill-cni-cost-'));
  try {
    const state = await labUp({ ...lab, nodes: 1, podsPerNode: 0 }, () => undefined);
    const node = state.nodes[0];
    const { conf, cniPath, plugin } = labCniSetup(state, node);
    const delegate = { ...delegateConfig(conf, readFileSync(node.subnetFile, 'utf8')), cniVersion: conf.cniVersion };
    const node24 = runtimeNode();
    const nodeVersion = (await run([node24, '--version'])).stdout.trim();
    const out: Required<CniCostResult> = {
      n,
      twill: { add: [], del: [] },
      otherCache: { add: [], del: [] },
      unbundled: { add: [], del: [] },
      delegates: { add: [], del: [] },
      nodeStart: [],
      compileCache: CNI_COMPILE_CACHE,
      nodeVersion,
    };
    // The plugin with the compile cache the other way; the cache directory is the tree's own
    // (cniCompileCacheDir), emptied first so the warm-up below is what fills it.
    rmSync(cniCompileCacheDir(), { recursive: true, force: true });
    const other = installCniPlugin(path.join(scratch, 'bin'), 'flannel', { compileCache: !CNI_COMPILE_CACHE });
    const plugins = [
      ['twill', [plugin], conf],
      ['otherCache', [other], conf],
      ['unbundled', [node24, path.join(repoRoot(), 'dist/controller/cni/main.js')], conf],
      ['delegates', ['/usr/lib/cni/bridge'], delegate],
    ] as const;
    say(
      `cni: lab ${lab.name} up on Node ${nodeVersion}; ${n} pods each through twill's plugin with and without Node's compile cache (installed: ${CNI_COMPILE_CACHE ? 'with' : 'without'}), its unbundled entry and bridge + host-local alone, and ${n} bare Node start-ups, interleaved`,
    );
    for (let i = -1; i < n; i++) {
      // Round -1 is untimed: it fills the compile cache (and the page cache) for every variant.
      for (const [who, argv, netconf] of plugins) {
        const podNs = `${lab.name}-cc`;
        await ip(['netns', 'add', podNs]);
        try {
          const env = {
            PATH: process.env.PATH,
            CNI_CONTAINERID: `${lab.name}-${who}-${i}`,
            CNI_NETNS: `/run/netns/${podNs}`,
            CNI_IFNAME: 'eth0',
            CNI_PATH: cniPath,
          };
          const input = JSON.stringify(netconf);
          const add = await timed([...argv], input, { ...env, CNI_COMMAND: 'ADD' }, node.netns);
          const del = await timed([...argv], input, { ...env, CNI_COMMAND: 'DEL' }, node.netns);
          if (i >= 0) {
            out[who].add.push(add);
            out[who].del.push(del);
          }
        } finally {
          await ip(['netns', 'del', podNs]);
        }
      }
      const start = await timed([node24, '-e', '0'], '', { PATH: process.env.PATH }, node.netns);
      if (i >= 0) out.nodeStart.push(start);
    }
    return out;
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await labDown(lab.name);
  }
}

export function cniCostSection(r: CniCostResult): string {
  const row = (label: string, xs: number[], ref: number[]) =>
    `| ${label} | ${median(xs).toFixed(1)} | ${percentile(xs, 90).toFixed(1)} | ${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)} | ${(median(xs) / median(ref)).toFixed(2)} |`;
  const added = median(r.twill.add) - median(r.delegates.add);
  const cacheLabel = (on: boolean | undefined) => (on ? 'with the compile cache' : 'without the compile cache');
  const ops = (op: 'add' | 'del', name: string) => [
    row(`${name}, twill's plugin${r.otherCache ? ` as installed (${cacheLabel(r.compileCache)})` : ''}`, r.twill[op], r.delegates[op]),
    ...(r.otherCache ? [row(`${name}, twill's plugin ${cacheLabel(!r.compileCache)}`, r.otherCache[op], r.delegates[op])] : []),
    ...(r.unbundled ? [row(`${name}, twill's plugin unbundled (ES modules)`, r.unbundled[op], r.delegates[op])] : []),
    row(`${name}, delegates alone`, r.delegates[op], r.delegates[op]),
  ];
  const floor = r.nodeStart && median(r.nodeStart);
  return [
    '## CNI plugin cost',
    '',
    `${r.n} pods added and deleted through twill's \`flannel\` plugin (which reads the subnet file, records the pod for the fast path and runs the delegates; its DEL also removes the pod's map entry), and ${r.n} through \`bridge\` + \`host-local\` alone with the very config twill's plugin hands them, interleaved, on one lab node whose agent runs. Times are each plugin process from start to exit, in ms; the last column is the p50 over the delegates' p50 for the same operation, which a busy machine moves less than the times.${r.unbundled ? " In the same rounds: the plugin run from tsc's ES modules instead of its bundle, and Node started with nothing to run (`node -e 0`)." : ''}${r.otherCache ? ` The plugin runs both with Node's on-disk compile cache (NODE_COMPILE_CACHE, filled by an untimed first round) and without; the installed one is ${cacheLabel(r.compileCache)}.` : ''}${r.nodeVersion ? ` Node ${r.nodeVersion}, the pinned runtime.` : ''}`,
    '',
    '| operation | p50 | p90 | min-max | x delegates |',
    '|---|--:|--:|--:|--:|',
    ...ops('add', 'ADD'),
    ...ops('del', 'DEL'),
    ...(r.nodeStart ? [row('Node start-up alone (`node -e 0`)', r.nodeStart, r.delegates.add)] : []),
    '',
    `| target | measured | met |`,
    '|---|--:|---|',
    `| twill adds at most ${CNI_ADD_BUDGET_MS} ms to an ADD (p50) | ${added.toFixed(1)} ms | ${added <= CNI_ADD_BUDGET_MS ? 'yes' : `no, ${(added - CNI_ADD_BUDGET_MS).toFixed(1)} ms over`} |`,
    ...(floor !== undefined
      ? [
          `| of which Node's start-up (\`node -e 0\`, p50) | ${floor.toFixed(1)} ms | ${floor <= CNI_ADD_BUDGET_MS ? 'fits the budget' : 'alone exceeds the budget'} |`,
        ]
      : []),
    ...(r.otherCache
      ? [
          `| the installed plugin's ADD (${cacheLabel(r.compileCache)}) over the other's (p50) | ${(median(r.twill.add) / median(r.otherCache.add)).toFixed(2)} x | ${median(r.twill.add) <= median(r.otherCache.add) ? 'yes, the installed one is the faster' : 'no: the other is faster, switch CNI_COMPILE_CACHE'} |`,
        ]
      : []),
    ...(r.unbundled ? [`| the bundle's ADD over the unbundled entry's (p50) | ${(median(r.twill.add) / median(r.unbundled.add)).toFixed(2)} x | |`] : []),
  ].join('\n');
}
