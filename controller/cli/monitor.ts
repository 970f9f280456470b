import { existsSync } from 'node:fs';
import { BpfMap } from '../bpf/libbpf.js';
import { RingBuffer } from '../bpf/libbpf.js';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { EVENTS_MAP } from '../../maps/layout.js';
import { MonitorSwitch, ownerAlive, pidNamespace, processStart } from '../monitor/control.js';
import { decodeEvent, formatEvent, matches, monitorOptions, type DecodeContext, type MonitorOptions } from '../monitor/events.js';
import { parseArgs, UsageError } from './args.js';
import { monitorOpts } from './options.js';

/** How often the ring buffer is read: often enough to look live, rarely enough to cost nothing. */
const POLL_MS = 100;
/** A slot no peer map named is looked up again at most this often (a peer added since the start). */
const PEER_REFRESH_MS = 1000;

/**
 * Every peer's PublicIP by its stats slot, per family: a dual-stack peer's IPv4 and IPv6 entries
 * share one slot, and an event names the address of its own family.
 */
function readPeerSlots(pinDir: string): Record<4 | 6, Map<number, string>> {
  const slots = { 4: new Map<number, string>(), 6: new Map<number, string>() };
  const maps = DatapathMaps.open(pinDir);
  try {
    for (const family of maps.families) for (const [ip, p] of family.readPeers()) slots[family.family].set(p.stats_slot, ip);
  } finally {
    maps.close();
  }
  return slots;
}

/** Each pod's addresses (both families) by its host veth's ifindex. */
function readPodVeths(pinDir: string): Map<number, string[]> {
  const pods = new Map<number, string[]>();
  const maps = DatapathMaps.open(pinDir);
  try {
    for (const family of maps.families) for (const [ip, ep] of family.readEndpoints()) pods.set(ep.ifindex, [...(pods.get(ep.ifindex) ?? []), ip]);
  } finally {
    maps.close();
  }
  return pods;
}

function decodeContext(pinDir: string): DecodeContext {
  let slots = readPeerSlots(pinDir);
  let refreshedAt = Date.now();
  let pods = readPodVeths(pinDir);
  let podsReadAt = Date.now();
  const lookUp = (slot: number, family: 4 | 6) => slots[family].get(slot) ?? slots[family === 4 ? 6 : 4].get(slot);
  return {
    vxlanPort: DatapathMaps.readPinnedConfig(pinDir)?.vxlan_port ?? 0,
    // process.hrtime is CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
    wallOffsetNs: BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint(),
    peerBySlot(slot, family) {
      if (lookUp(slot, family) === undefined && Date.now() - refreshedAt >= PEER_REFRESH_MS) {
        slots = readPeerSlots(pinDir);
        refreshedAt = Date.now();
      }
      return lookUp(slot, family);
    },
    podByIfindex(ifindex) {
      if (!pods.has(ifindex) && Date.now() - podsReadAt >= PEER_REFRESH_MS) {
        pods = readPodVeths(pinDir);
        podsReadAt = Date.now();
      }
      return pods.get(ifindex);
    },
  };
}

/** Opens the switch, refusing a datapath without one and a second live monitor. */
function takeSwitch(pinDir: string): MonitorSwitch {
  if (!existsSync(`${pinDir}/twill_config`)) throw new Error(`no twill datapath is pinned under ${pinDir} (wrong --pin-dir, or the node runs kernel VXLAN)`);
  const sw = MonitorSwitch.open(pinDir);
  if (!sw || !existsSync(`${pinDir}/${EVENTS_MAP}`))
    throw new Error(`${pinDir} has no twill_monitor: its datapath was attached by a build before twill monitor (layout 5); restart the agent with this build`);
  const c = sw.read();
  if (c.flags !== 0 && ownerAlive(c, pidNamespace(), processStart)) {
    sw.close();
    throw new Error(`another twill monitor (pid ${c.owner_pid}) is listening on ${pinDir}; monitors share one ring buffer, so one at a time`);
  }
  if (c.flags !== 0) process.stderr.write(`twill monitor: events were left on by monitor pid ${c.owner_pid}, which is gone; taking over\n`);
  return sw;
}

/** `twill monitor`: drops (and, with --type trace|all, sampled path decisions) as they happen. */
export async function monitorCli(argv: string[]): Promise<number> {
  const parsed = parseArgs(argv, monitorOpts);
  if (parsed._.length) throw new UsageError(`unexpected argument ${parsed._[0]}`);
  const given = new Set(argv.filter((a) => a.startsWith('--')).map((a) => a.slice(2).split('=')[0]));
  const opts = monitorOptions(parsed, given);
  const sw = takeSwitch(opts.pinDir);
  let events: BpfMap | undefined;
  let ring: RingBuffer | undefined;
  try {
    events = BpfMap.fromPin(`${opts.pinDir}/${EVENTS_MAP}`);
    ring = new RingBuffer(events.fd, `${opts.pinDir}/${EVENTS_MAP}`);
    ring.consume(); // what a monitor killed earlier left unread is not news
    return await listen(opts, sw, ring);
  } finally {
    sw.off();
    sw.close();
    ring?.close();
    events?.close();
  }
}

function listen(opts: MonitorOptions, sw: MonitorSwitch, ring: RingBuffer): Promise<number> {
  const ctx = decodeContext(opts.pinDir);
  const before = sw.read();
  // Whatever way the process ends short of SIGKILL, the programs stop writing events.
  const offAtExit = () => sw.off();
  process.once('exit', offAtExit);
  return new Promise<number>((resolve, reject) => {
    let printed = 0;
    const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
    const finish = (err?: Error) => {
      clearInterval(timer);
      for (const s of signals) process.removeListener(s, onSignal);
      process.removeListener('exit', offAtExit);
      const lost = sw.read().lost - before.lost;
      if (lost > 0n) process.stderr.write(`twill monitor: ${lost} events lost: the ring buffer was full\n`);
      if (err) reject(err);
      else resolve(0);
    };
    const onSignal = () => finish();
    const tick = () => {
      try {
        for (const record of ring.consume()) {
          const event = decodeEvent(record, ctx);
          if (!matches(event, opts.filter)) continue;
          console.log(opts.json ? JSON.stringify(event) : formatEvent(event));
          if (opts.count > 0 && ++printed >= opts.count) return finish();
        }
      } catch (err) {
        // ring.consume() and decodeEvent() throw Errors
        finish(err as Error);
      }
    };
    // Handlers first: a signal from here on ends the monitor cleanly, events turned off.
    for (const s of signals) process.once(s, onSignal);
    sw.write({
      ...before,
      flags: opts.flags,
      trace_sample: opts.traceSample,
      owner_pid: process.pid,
      owner_pidns: pidNamespace(),
      owner_start: processStart(process.pid) ?? 0n,
    });
    const timer = setInterval(tick, POLL_MS);
    process.stderr.write(`twill monitor: listening for ${[...opts.filter.kinds].join(' and ')} events on ${opts.pinDir} (Ctrl-C stops)\n`);
  });
}
