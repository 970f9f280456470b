import { readFileSync } from 'node:fs';
import { delegateConfig } from '../cni/plugin.js';
import { labCniSetup, labDown, labUp } from '../lab/lab.js';
import { ip } from '../netlink/ip.js';
import { run } from '../util/exec.js';
import { median, percentile } from './report.js';

/*
 * What twill's CNI plugin costs a pod: ADD and DEL through it (the `flannel` plugin the lab
 * installs, which reads the subnet file, records the pod and runs the delegates) against the
 * delegates alone (`bridge` with `host-local`, given the very config twill's plugin would hand
 * them), interleaved, on one lab node whose agent runs (so DEL also forgets the pod's map entry).
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
}

const LAB = { name: 'bn', underlayCidr: '192.168.106.0/24' };

async function timed(argv: string[], input: string, env: NodeJS.ProcessEnv, netns: string): Promise<number> {
  const started = performance.now();
  const res = await run(argv, { input, env, netns, allowFailure: true });
  const ms = performance.now() - started;
  if (res.code !== 0) throw new Error(`${argv[0]} ${env.CNI_COMMAND} failed: ${(res.stdout + res.stderr).trim()}`);
  return ms;
}

export async function cniCostBench(n: number, say: (m: string) => void): Promise<CniCostResult> {
  await labDown(LAB.name);
  try {
    const state = await labUp({ ...LAB, nodes: 1, podsPerNode: 0 }, () => undefined);
    const node = state.nodes[0];
    const { conf, cniPath, plugin } = labCniSetup(state, node);
    const delegate = { ...delegateConfig(conf, readFileSync(node.subnetFile, 'utf8')), cniVersion: conf.cniVersion };
    const out: CniCostResult = { n, twill: { add: [], del: [] }, delegates: { add: [], del: [] } };
    say(`cni: lab ${LAB.name} up; ${n} pods through twill's plugin and ${n} through bridge + host-local alone, interleaved`);
    for (let i = 0; i < n; i++) {
      for (const [who, argv, netconf] of [
        ['twill', [plugin], conf],
        ['delegates', ['/usr/lib/cni/bridge'], delegate],
      ] as const) {
        const podNs = `${LAB.name}-cc`;
        await ip(['netns', 'add', podNs]);
        try {
          const env = { PATH: process.env.PATH, CNI_CONTAINERID: `${LAB.name}-${who}-${i}`, CNI_NETNS: `/run/netns/${podNs}`, CNI_IFNAME: 'eth0', CNI_PATH: cniPath };
          const input = JSON.stringify(netconf);
          out[who].add.push(await timed([...argv], input, { ...env, CNI_COMMAND: 'ADD' }, node.netns));
          out[who].del.push(await timed([...argv], input, { ...env, CNI_COMMAND: 'DEL' }, node.netns));
        } finally {
          await ip(['netns', 'del', podNs]);
        }
      }
    }
    return out;
  } finally {
    await labDown(LAB.name);
  }
}

export function cniCostSection(r: CniCostResult): string {
  const row = (label: string, xs: number[]) => `| ${label} | ${median(xs).toFixed(1)} | ${percentile(xs, 90).toFixed(1)} | ${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)} |`;
  const added = median(r.twill.add) - median(r.delegates.add);
  return [
    '## CNI plugin cost',
    '',
    `${r.n} pods added and deleted through twill's \`flannel\` plugin (which reads the subnet file, records the pod for the fast path and runs the delegates; its DEL also removes the pod's map entry), and ${r.n} through \`bridge\` + \`host-local\` alone with the very config twill's plugin hands them, interleaved, on one lab node whose agent runs. Times are each plugin process from start to exit, in ms.`,
    '',
    '| operation | p50 | p90 | min-max |',
    '|---|--:|--:|--:|',
    row("ADD, twill's plugin", r.twill.add),
    row('ADD, delegates alone', r.delegates.add),
    row("DEL, twill's plugin", r.twill.del),
    row('DEL, delegates alone', r.delegates.del),
    '',
    `| target | measured | met |`,
    '|---|--:|---|',
    `| twill adds at most ${CNI_ADD_BUDGET_MS} ms to an ADD (p50) | ${added.toFixed(1)} ms | ${added <= CNI_ADD_BUDGET_MS ? 'yes' : `no, ${(added - CNI_ADD_BUDGET_MS).toFixed(1)} ms over`} |`,
  ].join('\n');
}
