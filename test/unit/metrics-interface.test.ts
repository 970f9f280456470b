import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { agentMetricFamilies } from '../../controller/metrics/agent-metrics.js';
import { AgentRegistry } from '../../controller/metrics/registry.js';
import { fullSnapshot } from '../support/agent-snapshot.js';

/*
 * Metric names, labels, types and help are an interface: what 15aa35c's hand-written formatter
 * served for a full BPF node (the fixture) must come out of the prom-client registry unchanged,
 * series by series, with per-peer series on (the default). New families may only be added.
 */
const before = readFileSync(new URL('../fixtures/metrics/agent-15aa35c.prom', import.meta.url), 'utf8');
const families = (text: string) => [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map(([, name, type]) => `${name} ${type}`);

describe('/metrics keeps what 15aa35c served', () => {
  it("renders the same lines for twill's families, in the same order", async () => {
    const registry = new AgentRegistry(() => agentMetricFamilies(fullSnapshot, { perPeer: true }), {
      build: { version: '0.1.0', mapLayout: 4 },
      eventLoopResolutionMs: 100,
    });
    const now = await registry.text();
    const added = new Set(['twill_build_info', 'twill_subnet_manager_info', 'twill_peer_source_drops_total']);
    // Reasons added since (layouts 7 and 8) are new samples of an old family; not_ipv4 stays,
    // deprecated, as the sum of the two counters layout 8 split it into.
    const addedSamples =
      /^(twill_datapath_drops_total\{reason="(pod_source|peer_source|not_ip|ipv6_off)"\}|twill_stack_path_packets_total\{direction="\w+",reason="(not_ip|ipv6_off)"\}) /;
    const ours = now
      .split('\n\n')
      .filter((block) => /^# HELP twill_/.test(block) && !added.has(block.split(' ')[2]))
      .join('\n')
      .split('\n')
      .filter((line) => !addedSamples.test(line))
      .join('\n');
    expect(ours.trimEnd()).toBe(before.trimEnd());
    // The fixture is the whole of the old interface: 26 families, each a TYPE line.
    expect(families(before)).toHaveLength(26);
    for (const f of families(before)) expect(families(now)).toContain(f);
    // prom-client does not hold counters to the text format's _total; twill's and its own do.
    for (const f of families(now).filter((f) => f.endsWith(' counter'))) expect(f).toMatch(/_total counter$/);
  });
});
