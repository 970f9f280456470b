#!/usr/bin/env node
// What /metrics through prom-client costs (the numbers in docs/metrics.md): the lazy import and
// first scrape in fresh processes with the agent's V8 flags, then one lab node's agent run
// alternately with its /metrics scraped every --scrape-every seconds, the same without per-peer
// series, and with no metrics server (and, with --baseline, another build's bin/twill scraped
// the same way), reading its resident memory and CPU time from /proc. Needs `npm run build`,
// root and the lab's tools.
// With --leases N, etcd first holds N fake leases (as the control-plane bench puts them), so
// the agent holds N peers and /metrics has 4 series for each.
//   .runtime/node/bin/node scripts/metrics-cost.mjs [--name tpc] [--underlay 192.168.117.0/24] [--rounds 2]
//        [--seconds 40] [--leases 0] [--scrape-every 1 (seconds; 0: never)]
//        [--baseline /path/to/other/checkout/bin/twill] [--write docs/metrics.md [--block metrics-cost]]
// With --write, the lines it prints also replace the generated block --block of that document
// (scripts/doc-blocks.mjs), which then names this command and the commit measured; the working
// tree must be clean but for that document.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import path from 'node:path';
import { cleanHead, writeBlockFile } from './doc-blocks.mjs';

const root = new URL('..', import.meta.url).pathname;
// The Node twill runs on (runtimeNode: the pinned .runtime/node), whichever node runs this script.
const { runtimeNode } = await import(`${root}dist/controller/util/paths.js`);
const node = runtimeNode();
const { values: o } = parseArgs({
  options: {
    name: { type: 'string', default: 'tpc' },
    underlay: { type: 'string', default: '192.168.117.0/24' },
    rounds: { type: 'string', default: '2' },
    seconds: { type: 'string', default: '40' },
    leases: { type: 'string', default: '0' },
    'scrape-every': { type: 'string', default: '1' },
    baseline: { type: 'string' },
    write: { type: 'string' },
    block: { type: 'string', default: 'metrics-cost' },
  },
});
// Refused before minutes of measuring, not after; the block must name the commit measured, so a
// commit made meanwhile makes the write fail.
const measuredAt = o.write ? cleanHead(root, [path.relative(root, path.resolve(o.write))]) : undefined;
const printed = [];
const say = (line) => {
  console.log(line);
  printed.push(line);
};
const { labUp, labDown } = await import(`${root}dist/controller/lab/lab.js`);
const { stopAgent } = await import(`${root}dist/controller/lab/agents.js`);
const v8Flags = ['--max-semi-space-size=1', '--max-old-space-size=256']; // as bin/twill
// The true median: the mean of the two middle values when there is an even number of them.
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// 1. The import the agent does when --healthz-port is set, its first scrape and later ones.
const probe = `
  await import('${root}dist/controller/metrics/agent-metrics.js');
  const rss = () => process.memoryUsage().rss, r0 = rss(), t0 = performance.now();
  const { AgentRegistry } = await import('${root}dist/controller/metrics/registry.js');
  const t1 = performance.now();
  const registry = new AgentRegistry(() => [], { build: { version: '0', mapLayout: 0 }, eventLoopResolutionMs: 100 });
  await registry.text();
  const t2 = performance.now();
  for (let i = 0; i < 100; i++) await registry.text();
  console.log(JSON.stringify({ importMs: t1 - t0, firstScrapeMs: t2 - t1, scrapeMs: (performance.now() - t2) / 100, rssMb: (rss() - r0) / 2 ** 20 }));
  process.exit(0);`;
const imports = Array.from({ length: 11 }, () => JSON.parse(spawnSync(node, [...v8Flags, '--input-type=module', '-e', probe], { encoding: 'utf8' }).stdout));
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
say(
  `import of prom-client and the registry (median of 11): ${median(imports.map((r) => r.importMs)).toFixed(0)} ms, first scrape ${median(imports.map((r) => r.firstScrapeMs)).toFixed(0)} ms, later scrapes ${median(imports.map((r) => r.scrapeMs)).toFixed(2)} ms each (process metrics only), RSS +${median(imports.map((r) => r.rssMb)).toFixed(1)} MB (load average ${load()})`,
);

// 2. A lab node's agent, run per configuration for --seconds, in --rounds interleaved rounds.
function procStats(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)[1]);
  const raw = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const stat = raw.slice(raw.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
  return { rssMb: kb('VmRSS') / 1024, peakMb: kb('VmHWM') / 1024, cpuS: (Number(stat[11]) + Number(stat[12])) / 100 }; // utime + stime, USER_HZ 100
}
const curl = (netns, url) => spawnSync('nsenter', [`--net=/run/netns/${netns}`, '--', 'curl', '-sf', '-o', '/dev/null', url]).status === 0;

await labDown(o.name);
try {
  const leases = Number(o.leases);
  const state = await labUp({
    name: o.name,
    underlayCidr: o.underlay,
    nodes: 2,
    ...(leases ? { podsPerNode: 0, network: '10.0.0.0/8', subnetLen: 24 } : { podsPerNode: 1 }),
  });
  const n1 = state.nodes[0];
  if (leases) {
    const fill = JSON.stringify({ endpoint: state.etcd.endpoint, prefix: state.etcd.prefix, count: leases });
    const res = spawnSync('nsenter', [`--net=/run/netns/${state.etcd.netns}`, '--', node, `${root}dist/controller/bench/lease-probe.js`, 'fill', fill], {
      encoding: 'utf8',
    });
    if (res.status !== 0) throw new Error(`lease fill: ${res.stderr}`);
  }
  const args = readFileSync(`/proc/${n1.agent.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const agentArgs = args.slice(args.indexOf('agent') + 1);
  await stopAgent(n1.agent.pid, n1.pinDir);
  const scrapeEvery = Number(o['scrape-every']);
  const scraped = scrapeEvery > 0 ? `/metrics scraped every ${scrapeEvery} s` : 'metrics server not scraped';
  const configs = [
    { label: `this build, ${scraped}`, bin: `${root}bin/twill`, extra: [], scraped: true },
    { label: `this build, --metrics-per-peer=false, ${scraped}`, bin: `${root}bin/twill`, extra: ['--metrics-per-peer=false'], scraped: true },
    { label: 'this build, no metrics server (--healthz-port=0)', bin: `${root}bin/twill`, extra: ['--healthz-port=0'], scraped: false },
    ...(o.baseline ? [{ label: `${o.baseline}, ${scraped}`, bin: o.baseline, extra: [], scraped: true }] : []),
  ];
  const results = new Map(configs.map((c) => [c.label, []]));
  for (let round = 0; round < Number(o.rounds); round++)
    for (const c of configs) {
      const child = spawn('nsenter', [`--net=/run/netns/${n1.netns}`, '--', c.bin, 'agent', ...agentArgs, ...c.extra], { stdio: 'ignore' });
      const seconds = Number(o.seconds);
      let half;
      for (let s = 0; s < seconds; s++) {
        await sleep(1000);
        if (c.scraped && scrapeEvery > 0 && s % scrapeEvery === 0) curl(n1.netns, `http://${n1.agent.healthz}/metrics`);
        if (s === Math.floor(seconds / 2)) half = procStats(child.pid);
      }
      const end = procStats(child.pid);
      results.get(c.label).push({ ...end, steadyCpuMsPerMin: ((end.cpuS - half.cpuS) * 60_000) / (seconds - Math.floor(seconds / 2) - 1) });
      await stopAgent(child.pid, n1.pinDir);
    }
  for (const [label, rs] of results)
    say(
      `${label}: RSS ${median(rs.map((r) => r.rssMb)).toFixed(1)} MB, peak ${median(rs.map((r) => r.peakMb)).toFixed(1)} MB, CPU ${median(rs.map((r) => r.cpuS)).toFixed(2)} s in ${o.seconds} s from start, ${median(rs.map((r) => r.steadyCpuMsPerMin)).toFixed(0)} ms/min in the second half (median of ${rs.length}; RSS per round ${rs.map((r) => r.rssMb.toFixed(1)).join(', ')})`,
    );
  say(`load average ${load()}${leases ? `; ${leases} leases in etcd` : ''}`);
} finally {
  await labDown(o.name);
}
if (o.write) {
  const command = ['node scripts/metrics-cost.mjs', ...process.argv.slice(2)].join(' ');
  const at = writeBlockFile(o.write, o.block, command, printed.map((l) => `- ${l}`).join('\n'), measuredAt);
  console.error(`${o.write}: block ${o.block} written, at ${at}`);
}
