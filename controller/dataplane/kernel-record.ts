import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { dataplaneSchema } from '../config/choices.js';
import { probeKernel } from './kernel-probe.js';
import { linkShow } from '../netlink/ip.js';
import { logger } from '../util/log.js';
import { readStateFile } from '../util/state-file.js';
import { chooseDataplane, type Capability, type ChoiceRequest, type DataplaneChoice, type KernelProbe } from './kernel-choice.js';

const log = logger('kernel');

/** What the agent probed and picked at start, for `twill status` (which has no agent to ask). */
interface KernelRecord {
  probe: KernelProbe;
  choice: DataplaneChoice;
}

// `present` undefined (the probe failed) is written as no key at all.
const capability = z.object({ present: z.boolean().optional(), detail: z.string() }).transform((c): Capability => ({ present: c.present, detail: c.detail }));
const kernelRecordSchema: z.ZodType<KernelRecord> = z.object({
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
export const kernelRecordPath = (pinDir: string) => `/run/twill/kernel/${pinDir.replace(/^\/sys\/fs\/bpf\//, '').replace(/\//g, '_')}.json`;

export function readKernelRecord(pinDir: string): KernelRecord | undefined {
  const file = kernelRecordPath(pinDir);
  if (!existsSync(file)) return undefined;
  return readStateFile('kernel record', file, kernelRecordSchema);
}

/**
 * The agent's start: probes the kernel (never the underlay's XDP: attaching there would disturb
 * live traffic, and attach itself falls back to tc), picks, logs why, and records it.
 */
export async function probeAndChoose(pinDir: string, req: Omit<ChoiceRequest, 'underlayKind'>, underlay: string): Promise<KernelRecord> {
  const probe = probeKernel();
  const choice = chooseDataplane(probe, { ...req, underlayKind: (await linkShow(underlay))?.linkinfo?.info_kind });
  const caps = Object.fromEntries(Object.entries(probe.capabilities).map(([k, c]) => [k, c.present ?? 'unknown']));
  log.info('kernel probed: dataplane chosen', { kernel: probe.kernel, capabilities: caps, choice: choice.dataplane, attach: choice.attach, decap: choice.decap, fastPath: choice.fastPath, reasons: choice.reasons });
  for (const [k, c] of Object.entries(probe.capabilities)) if (c.present === undefined) log.warn('kernel probe inconclusive', { capability: k, detail: c.detail });
  const record = { probe, choice };
  writeKernelRecord(pinDir, record);
  return record;
}

/** The BPF datapath failed to attach after all (a verifier the probes could not foresee): auto fell back. */
export function recordKernelFallback(pinDir: string, error: string): void {
  const record = readKernelRecord(pinDir);
  if (!record) return;
  const { attach: _a, decap: _d, fastPath: _f, ...choice } = record.choice;
  writeKernelRecord(pinDir, { ...record, choice: { ...choice, dataplane: 'kernel', reasons: { dataplane: `auto: the BPF datapath did not attach (${error.split('\n')[0]}): kernel VXLAN as flannel does` } } });
}

function writeKernelRecord(pinDir: string, record: KernelRecord): void {
  const file = kernelRecordPath(pinDir);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(record, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}
