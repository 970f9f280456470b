import { readFileSync } from 'node:fs';
import path from 'node:path';
import { delegateConfig } from '../cni/plugin.js';
import { labCniSetup, labDown, labUp } from '../lab/lab.js';
import { ip } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import { repoRoot } from '../util/paths.js';
import { median, percentile } from './report.js';

/*
 * What twill's CNI plugin costs a pod: ADD and DEL through it (the `flannel` plugin the lab
 * installs, which reads the subnet file, records the pod and runs the delegates) against the
 * delegates alone (`bridge` with `host-local`, given the very config twill's plugin would hand
 * them), interleaved, on one lab node whose agent runs (so DEL also forgets the pod's map entry).
 * Two references run in the same rounds, since the machine's load moves absolute times: the
 * plugin's unbundled ES-module entry (what the bundle saves) and Node starting with nothing to
 * run (the floor of any plugin written for Node).
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
  try {
    const state = await labUp({ ...lab, nodes: 1, podsPerNode: 0 }, () => undefined);
    const node = state.nodes[0];
    const { conf, cniPath, plugin } = labCniSetup(state, node);
    const delegate = { ...delegateConfig(conf, readFileSync(node.subnetFile, 'utf8')), cniVersion: conf.cniVersion };
    const out: Required<CniCostResult> = { n, twill: { add: [], del: [] }, unbundled: { add: [], del: [] }, delegates: { add: [], del: [] }, nodeStart: [] };
    const plugins = [
      ['twill', [plugin], conf],
      ['unbundled', [process.execPath, path.join(repoRoot(), 'dist/controller/cni/main.js')], conf],
      ['delegates', ['/usr/lib/cni/bridge'], delegate],
    ] as const;
    say(`cni: lab ${lab.name} up; ${n} pods each through twill's plugin, its unbundled entry and bridge + host-local alone, and ${n} bare Node start-ups, interleaved`);
    for (let i = 0; i < n; i++) {
      for (const [who, argv, netconf] of plugins) {
        const podNs = `${lab.name}-cc`;
        await ip(['netns', 'add', podNs]);
        try {
          const env = { PATH: process.env.PATH, CNI_CONTAINERID: `${lab.name}-${who}-${i}`, CNI_NETNS: `/run/netns/${podNs}`, CNI_IFNAME: 'eth0', CNI_PATH: cniPath };
          const input = JSON.stringify(netconf);
          out[who].add.push(await timed([...argv], input, { ...env, CNI_COMMAND: 'ADD' }, node.netns));
          out[who].del.push(await timed([...argv], input, { ...env, CNI_COMMAND: 'DEL' }, node.netns));
        } finally {
          await ip(['netns', 'del', podNs]);
        }
      }
      out.nodeStart.push(await timed([process.execPath, '-e', '0'], '', { PATH: process.env.PATH }, node.netns));
    }
    return out;
  } finally {
    await labDown(lab.name);
  }
}

export function cniCostSection(r: CniCostResult): string {
  const row = (label: string, xs: number[], ref: number[]) =>
    `| ${label} | ${median(xs).toFixed(1)} | ${percentile(xs, 90).toFixed(1)} | ${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)} | ${(median(xs) / median(ref)).toFixed(2)} |`;
  const added = median(r.twill.add) - median(r.delegates.add);
  const ops = (op: 'add' | 'del', name: string) => [
    row(`${name}, twill's plugin`, r.twill[op], r.delegates[op]),
    ...(r.unbundled ? [row(`${name}, twill's plugin unbundled (ES modules)`, r.unbundled[op], r.delegates[op])] : []),
    row(`${name}, delegates alone`, r.delegates[op], r.delegates[op]),
  ];
  const floor = r.nodeStart && median(r.nodeStart);
  return [
    '## CNI plugin cost',
    '',
    `${r.n} pods added and deleted through twill's \`flannel\` plugin (which reads the subnet file, records the pod for the fast path and runs the delegates; its DEL also removes the pod's map entry), and ${r.n} through \`bridge\` + \`host-local\` alone with the very config twill's plugin hands them, interleaved, on one lab node whose agent runs. Times are each plugin process from start to exit, in ms; the last column is the p50 over the delegates' p50 for the same operation, which a busy machine moves less than the times.${r.unbundled ? " In the same rounds: the plugin run from tsc's ES modules instead of its bundle, and Node started with nothing to run (`node -e 0`)." : ''}`,
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
    ...(floor !== undefined ? [`| of which Node's start-up (\`node -e 0\`, p50) | ${floor.toFixed(1)} ms | ${floor <= CNI_ADD_BUDGET_MS ? 'fits the budget' : 'alone exceeds the budget'} |`] : []),
    ...(r.unbundled ? [`| the bundle's ADD over the unbundled entry's (p50) | ${(median(r.twill.add) / median(r.unbundled.add)).toFixed(2)} x | |`] : []),
  ].join('\n');
}
