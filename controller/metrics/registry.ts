import { collectDefaultMetrics, Counter, Gauge, Registry, Summary } from 'prom-client';
import type { MetricFamily } from './agent-metrics.js';

/*
 * The agent's /metrics through prom-client: its process and Node.js runtime metrics (resident
 * memory, CPU, event-loop lag, heap, open fds, GC), twill_build_info, and twill's own families.
 * Those are read from the pins and the agent's state at each scrape, and which of them exist
 * depends on the node at that moment (no BPF counters in kernel mode, no lease before one is
 * held), so they go into a registry made for the scrape rather than into long-lived metrics
 * that would report a 0 for what the node does not have.
 */

export interface BuildInfo {
  /** package.json's version */
  version: string;
  /** maps/layout.ts's LAYOUT_VERSION: the pinned maps' format this build reads and writes */
  mapLayout: number;
}

export interface AgentRegistryOptions {
  build: BuildInfo;
  /**
   * perf_hooks' event-loop delay sampling interval in ms: the timer wakes the process this
   * often, so it is coarser than prom-client's 10 ms default (see docs/metrics.md).
   */
  eventLoopResolutionMs: number;
}

export const EVENT_LOOP_RESOLUTION_MS = 100;

/** One registry per agent: the families made once (process, runtime, build). */
export function processRegistry(opts: AgentRegistryOptions): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: opts.eventLoopResolutionMs });
  const build = new Gauge({
    name: 'twill_build_info',
    help: "The twill build this agent runs: package.json's version and the pinned maps' layout version.",
    labelNames: ['version', 'map_layout'],
    registers: [registry],
  });
  build.set({ version: opts.build.version, map_layout: String(opts.build.mapLayout) }, 1);
  return registry;
}

/** twill's families as one scrape read them, in a registry of their own. */
export function familiesRegistry(families: readonly MetricFamily[]): Registry {
  const registry = new Registry();
  for (const f of families) {
    const config = { name: f.name, help: f.help, labelNames: [...f.labelNames], registers: [registry] };
    switch (f.type) {
      case 'gauge': {
        const g = new Gauge(config);
        for (const s of f.samples) g.set(s.labels ?? {}, Number(s.value));
        break;
      }
      case 'counter': {
        const c = new Counter(config);
        for (const s of f.samples) c.inc(s.labels ?? {}, Number(s.value));
        break;
      }
      case 'summary':
        new TotalsSummary(config, f);
        break;
    }
  }
  return registry;
}

/**
 * A summary whose _sum and _count are totals the agent keeps (the reconciler's), where
 * prom-client's Summary would only add up observations it made itself. No quantiles, as before.
 */
class TotalsSummary extends Summary {
  constructor(
    config: { name: string; help: string; labelNames: string[]; registers: Registry[] },
    private readonly family: MetricFamily,
  ) {
    super({ ...config, percentiles: [] });
  }

  override async get() {
    const { name } = this.family;
    const values = this.family.samples.map((s) => {
      if (!s.suffix) throw new Error(`summary ${name}: a sample without _sum or _count`);
      return { labels: s.labels ?? {}, metricName: name + s.suffix, value: Number(s.value) };
    });
    return { ...(await super.get()), values };
  }
}

/** /metrics: twill's families first, then the process's; names may not clash. */
export class AgentRegistry {
  private readonly process: Registry;

  constructor(
    private readonly families: () => readonly MetricFamily[],
    opts: AgentRegistryOptions,
  ) {
    this.process = processRegistry(opts);
  }

  get contentType(): string {
    return this.process.contentType;
  }

  async text(): Promise<string> {
    return Registry.merge([familiesRegistry(this.families()), this.process]).metrics();
  }
}
