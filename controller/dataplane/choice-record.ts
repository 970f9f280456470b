import { existsSync } from 'node:fs';
import { z } from 'zod';
import { dataplaneSchema } from '../config/choices.js';
import { probeKernelFeatures } from './feature-probe.js';
import { linkShow } from '../netlink/ip.js';
import { logger } from '../util/log.js';
import { readStateFile, writeStateFile } from '../util/state-file.js';
import { chooseDataplane, type Capability, type ChoiceRequest, type DataplaneChoice, type FeatureProbe } from './dataplane-choice.js';

/*
 * The record of the agent's start: the kernel's features as probed (feature-probe.ts) and the
 * dataplane picked from them (dataplane-choice.ts). On disk and in logs it is still the "kernel
 * record" under /run/twill/kernel/: operators and older builds read it by that name.
 */

const log = logger('kernel');

/** What the agent probed and picked at start, for `twill status` (which has no agent to ask). */
interface ChoiceRecord {
  probe: FeatureProbe;
  choice: DataplaneChoice;
}

// `present` undefined (the probe failed) is written as no key at all.
const capability = z.object({ present: z.boolean().optional(), detail: z.string() }).transform((c): Capability => ({ present: c.present, detail: c.detail }));
const choiceRecordSchema: z.ZodType<ChoiceRecord> = z.object({
  probe: z.object({
    kernel: z.string(),
    capabilities: z.object({
      btf: capability,
      tcx: capability,
      redirectPeer: capability,
      redirectNeigh: capability,
      checkMtu: capability,
      conntrackKfuncs: capability,
      ringbuf: capability,
      xdpNative: capability.optional(),
    }),
    iface: z.string().optional(),
    probedAt: z.string(),
  }),
  choice: z.object({
    requested: dataplaneSchema,
    dataplane: z.enum(['bpf', 'kernel']),
    attach: z.enum(['tcx', 'clsact']).optional(),
    decap: z.enum(['xdp', 'tc']).optional(),
    fastPath: z.boolean().optional(),
    reasons: z.object({ dataplane: z.string(), attach: z.string().optional(), decap: z.string().optional(), fastPath: z.string().optional() }),
  }),
});

/**
 * Beside the attach state's directory, not in it: detaching the BPF datapath removes that
 * directory, and a node that fell back to kernel VXLAN must still say why.
 */
export const choiceRecordPath = (pinDir: string) => `/run/twill/kernel/${pinDir.replace(/^\/sys\/fs\/bpf\//, '').replace(/\//g, '_')}.json`;

export function readChoiceRecord(pinDir: string): ChoiceRecord | undefined {
  const file = choiceRecordPath(pinDir);
  if (!existsSync(file)) return undefined;
  return readStateFile('kernel record', file, choiceRecordSchema);
}

/**
 * The agent's start: probes the kernel (never the underlay's XDP: attaching there would disturb
 * live traffic, and attach itself falls back to tc), picks, logs why, and records it.
 */
export async function probeAndChoose(pinDir: string, req: Omit<ChoiceRequest, 'underlayKind'>, underlay: string): Promise<ChoiceRecord> {
  const probe = probeKernelFeatures();
  const choice = chooseDataplane(probe, { ...req, underlayKind: (await linkShow(underlay))?.linkinfo?.info_kind });
  const caps = Object.fromEntries(Object.entries(probe.capabilities).map(([k, c]) => [k, c.present ?? 'unknown']));
  log.info('kernel probed: dataplane chosen', {
    kernel: probe.kernel,
    capabilities: caps,
    choice: choice.dataplane,
    attach: choice.attach,
    decap: choice.decap,
    fastPath: choice.fastPath,
    reasons: choice.reasons,
  });
  for (const [k, c] of Object.entries(probe.capabilities))
    if (c.present === undefined) log.warn('kernel probe inconclusive', { capability: k, detail: c.detail });
  const record = { probe, choice };
  writeChoiceRecord(pinDir, record);
  return record;
}

/** The BPF datapath failed to attach after all (a verifier the probes could not foresee): auto fell back. */
export function recordKernelFallback(pinDir: string, error: string): void {
  const record = readChoiceRecord(pinDir);
  if (!record) return;
  const { attach: _a, decap: _d, fastPath: _f, ...choice } = record.choice;
  writeChoiceRecord(pinDir, {
    ...record,
    choice: {
      ...choice,
      dataplane: 'kernel',
      reasons: { dataplane: `auto: the BPF datapath did not attach (${error.split('\n')[0]}): kernel VXLAN as flannel does` },
    },
  });
}

function writeChoiceRecord(pinDir: string, record: ChoiceRecord): void {
  writeStateFile(choiceRecordPath(pinDir), record);
}
