import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  BpfError,
  BpfLink,
  BpfMap,
  BpfObject,
  ifNameToIndex,
  probeTcx,
  tcClsactAttach,
  tcClsactDetach,
  xdpAttachLegacy,
  xdpDetachLegacy,
  type BpfProgram,
} from '../bpf/libbpf.js';
import { LAYOUT_VERSION, mapSpecs } from '../../maps/layout.js';
import { linkShow } from '../netlink/ip.js';
import { logger } from '../util/log.js';
import { bpfObjectDir } from '../util/paths.js';
import { DatapathMaps } from './datapath-maps.js';
import { ensureOverlayDevice, removeOverlayDevice } from './overlay-device.js';
import { pinPaths, type DataplaneSpec } from './spec.js';

const log = logger('dataplane');

type DecapMode = 'xdp-link' | 'xdp-native' | 'xdp-generic' | 'tcx' | 'clsact';
const isTcMode = (m: DecapMode) => m === 'tcx' || m === 'clsact';

/** What is attached where; written next to the pins so status and detach need no flags. */
export interface AttachState {
  spec: DataplaneSpec;
  encap: { mode: 'tcx' | 'clsact'; iface: string; ifindex: number };
  decap: { mode: DecapMode; iface: string; ifindex: number };
  layoutVersion: number;
  attachedAt: string;
}

export interface AttachResult {
  state: AttachState;
  /** true when existing links were kept and only their programs swapped */
  swapped: { encap: boolean; decap: boolean };
}

/**
 * Installs (or upgrades in place) one node's datapath. Must run inside the node's network
 * namespace. Idempotent: a second run swaps the programs on the existing pinned links
 * atomically and leaves map contents alone, so a restart never interrupts traffic.
 */
export interface AttachHooks {
  /**
   * Runs with the maps open and the config written, before any program is attached: the agent
   * fills in the peers here, so decap never runs with an empty allow-list (which would drop
   * every peer's traffic for the moment it takes the reconciler to catch up).
   */
  beforeAttach?(maps: DatapathMaps): Promise<void>;
}

/**
 * Where the BPF objects come from: the checkout's build, unless TWILL_BPF_DIR names another
 * directory (a packaged install, or an upgrade test loading a second build).
 */
export const objectDirInUse = () => process.env.TWILL_BPF_DIR || bpfObjectDir();

/** enum bpf_map_type, for the kinds maps/layout.ts may declare */
const MAP_TYPE_IDS: Record<string, number> = { hash: 1, array: 2, percpu_hash: 5, percpu_array: 6, lru_hash: 9, lpm_trie: 11 };

export interface RetiredPin {
  pin: string;
  found: string;
  expected: string;
}

/**
 * A pinned map left by a build with another layout (a struct grew, a size changed) cannot be
 * reused: libbpf refuses to load against it and the typed map wrappers refuse to open it, so
 * an upgrade would crash. Its pin is removed instead, so the next load creates the map afresh
 * and the agent refills it. Programs still attached keep the old map alive until their links
 * are swapped, so forwarding goes on meanwhile; what is lost is the content of that one map
 * (counters, or the VtepMAC if it was the config map's layout that changed).
 */
export function retireIncompatiblePins(pinDir: string): RetiredPin[] {
  const retired: RetiredPin[] = [];
  for (const [name, want] of Object.entries(mapSpecs)) {
    const pin = `${pinDir}/${name}`;
    if (!existsSync(pin)) continue;
    let found: string;
    try {
      const map = BpfMap.fromPin(pin);
      const i = map.info();
      map.close();
      found = `type ${i.type}, key ${i.keySize} B, value ${i.valueSize} B, ${i.maxEntries} entries`;
    } catch (err) {
      found = `unreadable (${(err as Error).message})`;
    }
    const type = MAP_TYPE_IDS[want.kind] ?? /^type (\d+)/.exec(found)?.[1]; // a kind not listed here: judged by sizes only
    const expected = `type ${type}, key ${want.key.size} B, value ${want.value.size} B, ${want.maxEntries} entries`;
    if (found === expected) continue;
    log.warn('pinned map has another layout than this build: replacing it', { pin, found, expected });
    rmSync(pin, { force: true });
    retired.push({ pin, found, expected });
  }
  return retired;
}

export async function attachDataplane(spec: DataplaneSpec, objectDir = objectDirInUse(), hooks: AttachHooks = {}): Promise<AttachResult> {
  retireIncompatiblePins(spec.pinDir);
  const underlay = await linkShow(spec.underlayIface);
  if (!underlay) throw new Error(`underlay interface ${spec.underlayIface} not found in this network namespace`);
  await ensureOverlayDevice(spec, spec.mtu ?? underlay.mtu);
  // Decapped packets arrive on the underlay from pod addresses routed via the overlay device.
  writeFileSync(`/proc/sys/net/ipv4/conf/${spec.underlayIface}/rp_filter`, '2');

  const overlayIfindex = ifNameToIndex(spec.overlayDevice);
  const underlayIfindex = ifNameToIndex(spec.underlayIface);
  const paths = pinPaths(spec.pinDir);
  mkdirSync(path.dirname(paths.encapLink), { recursive: true });

  const encapObj = BpfObject.open(path.join(objectDir, 'encap.bpf.o'), { pinRootPath: spec.pinDir });
  const decapObj = BpfObject.open(path.join(objectDir, 'decap.bpf.o'), { pinRootPath: spec.pinDir });
  try {
    encapObj.load();
    decapObj.load();

    // Config first: the programs must never run against a half-written identity.
    const maps = DatapathMaps.open(spec.pinDir);
    try {
      const [subnet, subnetLen] = spec.subnet.split('/');
      const [network, networkLen] = spec.network.split('/');
      maps.writeConfig({
        public_ip: spec.publicIp,
        vtep_mac: spec.vtepMac.toLowerCase(),
        underlay_mac: underlay.address!,
        subnet,
        network,
        subnet_len: Number(subnetLen),
        network_len: Number(networkLen),
        vxlan_port: spec.port,
        vni: spec.vni,
        underlay_ifindex: underlayIfindex,
        flags: 0,
      });
      await hooks.beforeAttach?.(maps);
    } finally {
      maps.close();
    }

    const previous = readAttachState(spec.pinDir);
    const encap = attachEncap(encapObj.program('twill_encap'), overlayIfindex, paths.encapLink, previous);
    const decap =
      spec.decapHook === 'tc'
        ? attachDecapTc(decapObj.program('twill_decap_tc'), underlayIfindex, paths.decapLink, previous)
        : attachDecap(decapObj.program('twill_decap'), underlayIfindex, paths.decapLink, previous);
    const state: AttachState = {
      spec,
      encap: { mode: encap.mode, iface: spec.overlayDevice, ifindex: overlayIfindex },
      decap: { mode: decap.mode, iface: spec.underlayIface, ifindex: underlayIfindex },
      layoutVersion: LAYOUT_VERSION,
      attachedAt: new Date().toISOString(),
    };
    writeAttachState(spec.pinDir, state);
    log.info('datapath attached', { pinDir: spec.pinDir, encap: state.encap, decap: state.decap, swapped: { encap: encap.swapped, decap: decap.swapped } });
    return { state, swapped: { encap: encap.swapped, decap: decap.swapped } };
  } finally {
    encapObj.close();
    decapObj.close();
  }
}

/** Reuses a pinned link if it still hooks the same device; a link whose device vanished is replaced. */
function reusableLink(pin: string, ifindex: number): BpfLink | undefined {
  if (!existsSync(pin)) return undefined;
  const link = BpfLink.fromPin(pin);
  if (link.info().ifindex === ifindex) return link;
  log.warn('pinned link points at another or a deleted device, replacing it', { pin, linkIfindex: link.info().ifindex, ifindex });
  link.close();
  rmSync(pin, { force: true });
  return undefined;
}

/** The upgrade path: the link stays, only its program changes (atomically). */
function swapOnPinnedLink(pin: string, ifindex: number, prog: BpfProgram): boolean {
  const existing = reusableLink(pin, ifindex);
  if (!existing) return false;
  existing.update(prog);
  existing.close();
  return true;
}

/** Pinned, the link (and so the attachment) outlives this process. */
function pinAndRelease(link: BpfLink, pin: string): void {
  link.pin(pin);
  link.close();
}

/** A tc program on one direction of a device: tcx link where the kernel has it, else clsact. */
function attachTc(prog: BpfProgram, ifindex: number, direction: 'ingress' | 'egress', pin: string, previousMode?: string) {
  if (swapOnPinnedLink(pin, ifindex, prog)) return { mode: 'tcx' as const, swapped: true };
  if (probeTcx()) {
    pinAndRelease(BpfLink.attachTcx(prog, ifindex, direction), pin);
    return { mode: 'tcx' as const, swapped: false };
  }
  // clsact filters live in the qdisc, not in a process: replacing one is the swap.
  tcClsactAttach(prog, ifindex, direction, { handle: 1, priority: 1 });
  return { mode: 'clsact' as const, swapped: previousMode === 'clsact' };
}

function attachEncap(prog: BpfProgram, ifindex: number, pin: string, previous?: AttachState) {
  return attachTc(prog, ifindex, 'egress', pin, previous?.encap.mode);
}

/**
 * A change of decap hook (XDP <-> tc) cannot swap programs on one link. The old attachment is
 * unpinned but kept until the new one is in place (returned callback), so no packet meets a
 * node without decap: while both run, XDP decaps first and tc sees only inner packets.
 */
function takeOverDecapHook(wantTc: boolean, pin: string, previous?: AttachState): () => void {
  if (!previous || isTcMode(previous.decap.mode) === wantTc) return () => undefined;
  log.info('decap hook changes: the old attachment goes once the new one is in place', { from: previous.decap.mode, iface: previous.decap.iface });
  const oldLink = existsSync(pin) ? BpfLink.fromPin(pin) : undefined;
  if (oldLink) rmSync(pin);
  return () => {
    oldLink?.detach();
    oldLink?.close();
    removeUnpinnedDecap(previous);
  };
}

/** Decap attachments that are not links (so not pinned): legacy XDP and clsact filters. */
function removeUnpinnedDecap(state: AttachState): string[] {
  if (state.decap.mode === 'clsact') {
    tcClsactDetach(state.decap.ifindex, 'ingress', { handle: 1, priority: 1 });
    return [`clsact ingress on ${state.decap.iface}`];
  }
  if (state.decap.mode === 'xdp-native' || state.decap.mode === 'xdp-generic') {
    xdpDetachLegacy(state.decap.ifindex, state.decap.mode === 'xdp-native' ? 'native' : 'generic');
    return [`${state.decap.mode} on ${state.decap.iface}`];
  }
  return [];
}

function attachDecapTc(prog: BpfProgram, ifindex: number, pin: string, previous?: AttachState) {
  const finish = takeOverDecapHook(true, pin, previous);
  const attached = attachTc(prog, ifindex, 'ingress', pin, previous?.decap.mode);
  finish();
  return attached;
}

function attachDecap(prog: BpfProgram, ifindex: number, pin: string, previous?: AttachState) {
  const finish = takeOverDecapHook(false, pin, previous);
  const attached = attachDecapXdp(prog, ifindex, pin, previous);
  finish();
  return attached;
}

function attachDecapXdp(prog: BpfProgram, ifindex: number, pin: string, previous?: AttachState) {
  if (swapOnPinnedLink(pin, ifindex, prog)) return { mode: 'xdp-link' as const, swapped: true };
  try {
    pinAndRelease(BpfLink.attachXdp(prog, ifindex), pin);
    return { mode: 'xdp-link' as const, swapped: false };
  } catch (err) {
    if (!(err instanceof BpfError)) throw err;
    log.warn('XDP link attach failed, falling back to a legacy XDP attachment', { ifindex, error: err.message });
  }
  try {
    xdpAttachLegacy(prog, ifindex, 'native');
    return { mode: 'xdp-native' as const, swapped: previous?.decap.mode === 'xdp-native' };
  } catch (err) {
    log.warn('native XDP unavailable, using generic XDP (runs after GRO: slower)', { ifindex, error: (err as Error).message });
    xdpAttachLegacy(prog, ifindex, 'generic');
    return { mode: 'xdp-generic' as const, swapped: previous?.decap.mode === 'xdp-generic' };
  }
}

export function readAttachState(pinDir: string): AttachState | undefined {
  const file = pinPaths(pinDir).attachState;
  if (!existsSync(file)) return undefined;
  return JSON.parse(readFileSync(file, 'utf8')) as AttachState;
}

function writeAttachState(pinDir: string, state: AttachState): void {
  const file = pinPaths(pinDir).attachState;
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}

/**
 * Removes everything attachDataplane made: links (detached, not just unpinned), the overlay
 * device and its route, and the pin directory with the maps. Runs inside the node's netns.
 */
export async function detachDataplane(pinDir: string): Promise<{ removed: string[] }> {
  const removed: string[] = [];
  const state = readAttachState(pinDir);
  const paths = pinPaths(pinDir);
  if (state) removed.push(...removeUnpinnedDecap(state));
  for (const pin of [paths.encapLink, paths.decapLink]) {
    if (!existsSync(pin)) continue;
    const link = BpfLink.fromPin(pin);
    link.detach();
    link.close();
    rmSync(pin);
    removed.push(pin);
  }
  if (state?.encap.mode === 'clsact') {
    tcClsactDetach(state.encap.ifindex, 'egress', { handle: 1, priority: 1 });
    removed.push(`clsact egress on ${state.encap.iface}`);
  }
  const dev = state?.spec.overlayDevice ?? 'twill0';
  if (await removeOverlayDevice(dev)) removed.push(`device ${dev}`);
  if (existsSync(pinDir)) {
    rmSync(pinDir, { recursive: true, force: true });
    removed.push(pinDir);
  }
  rmSync(path.dirname(paths.attachState), { recursive: true, force: true });
  return { removed };
}
