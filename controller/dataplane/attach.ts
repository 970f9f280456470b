import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import {
  BpfError,
  BpfLink,
  ifNameToIndex,
  probeTcx,
  tcClsactAttach,
  tcClsactDetach,
  unsupportedBy,
  xdpAttachLegacy,
  xdpDetachLegacy,
  type BpfProgram,
  type LinkKind,
  type ProgramRef,
} from '../bpf/libbpf.js';
import { CONFIG_FAST_PATH, CONFIG_POD_SOURCE_CHECK, LAYOUT_VERSION } from '../../maps/layout.js';
import { linkShow } from '../netlink/ip.js';
import { removeHeadroomPorts } from './headroom.js';
import { logger } from '../util/log.js';
import { isTcMode, readAttachState, writeAttachState, type AttachState, type DecapMode, type TcMode } from './attach-state.js';
import { loadObjects, objectDirInUse, retireIncompatiblePins } from './bpf-objects.js';
import { DatapathMaps } from './datapath-maps.js';
import { chooseDecapHook } from './dataplane-choice.js';
import { ensureOverlayDevice, ensureTunnelDevice, removeOverlayDevice, setLooseRpFilter, tunnelDeviceUp } from './overlay-device.js';
import { detachPodLinks, POD_LINK, swapPodLinks } from './pod-links.js';
import { OVERLAY_DEVICE, pinPaths, TUNNEL_DEVICE, type DataplaneSpec } from './spec.js';

/*
 * The attach choreography: the order in which a node's datapath is put in place (config before
 * programs, peers before decap), kept or swapped on the links an earlier run pinned, moved
 * between XDP and tc without a gap, and taken away again. What it attached is recorded in the
 * attach state (attach-state.ts); which objects it loads is bpf-objects.ts's choice.
 */

/** twill_config's IPv4 identity on an IPv6-only node */
const NO_IPV4 = '0.0.0.0';
const NO_IPV4_CIDR = `${NO_IPV4}/0`;
const log = logger('dataplane');

/** The netlink XDP mode of an attachment made without a link. */
const legacyXdpMode = (m: 'xdp-native' | 'xdp-generic') => (m === 'xdp-native' ? 'native' : 'generic');

interface AttachResult {
  state: AttachState;
  /** true when existing links were kept and only their programs swapped */
  swapped: { encap: boolean; decap: boolean };
}

export interface AttachOptions {
  spec: DataplaneSpec;
  /** where the BPF objects are: the checkout's build unless TWILL_BPF_DIR names another */
  objectDir?: string;
  /**
   * Runs with the maps open and the config written, before any program is attached: the agent
   * fills in the peers here, so decap never runs with an empty allow-list (which would drop
   * every peer's traffic for the moment it takes the reconciler to catch up).
   */
  beforeAttach?: (maps: DatapathMaps) => Promise<void>;
}

/**
 * Installs (or upgrades in place) one node's datapath. Must run inside the node's network
 * namespace. Idempotent: a second run swaps the programs on the existing pinned links
 * atomically and leaves map contents alone, so a restart never interrupts traffic.
 */
export async function attachDataplane({ spec, objectDir = objectDirInUse(), beforeAttach }: AttachOptions): Promise<AttachResult> {
  // Before anything changes: a pin twill would reuse must hold the link twill put there.
  checkPinnedLinks(spec.pinDir, readAttachState(spec.pinDir));
  retireIncompatiblePins(spec.pinDir);
  const underlay = await linkShow(spec.underlayIface);
  if (!underlay) throw new Error(`underlay interface ${spec.underlayIface} not found in this network namespace`);
  await ensureOverlayDevice(spec, spec.mtu ?? underlay.mtu);
  // Decapped packets arrive on the underlay from pod addresses routed via the overlay device.
  setLooseRpFilter(spec.underlayIface);

  const overlayIfindex = ifNameToIndex(spec.overlayDevice);
  const underlayIfindex = ifNameToIndex(spec.underlayIface);
  const paths = pinPaths(spec.pinDir);
  mkdirSync(path.dirname(paths.encapLink), { recursive: true });

  const objects = loadObjects(objectDir, spec.pinDir, spec.fastPath);
  try {
    // Config first: the programs must never run against a half-written identity.
    const maps = DatapathMaps.open(spec.pinDir);
    try {
      // An IPv6-only node: zeros, so no IPv4 VXLAN is ever addressed to us (our PublicIP would be 0.0.0.0).
      const [subnet, subnetLen] = (spec.subnet ?? NO_IPV4_CIDR).split('/');
      const [network, networkLen] = (spec.network ?? NO_IPV4_CIDR).split('/');
      maps.writeConfig({
        public_ip: spec.publicIp ?? NO_IPV4,
        vtep_mac: spec.vtepMac.toLowerCase(),
        underlay_mac: underlay.address!,
        subnet,
        network,
        subnet_len: Number(subnetLen),
        network_len: Number(networkLen),
        vxlan_port: spec.backend === 'host-gw' ? 0 : spec.port, // 0: decap takes nothing for VXLAN
        vni: spec.vni,
        underlay_ifindex: underlayIfindex,
        flags: (objects.fastPath.enabled ? CONFIG_FAST_PATH : 0) | (spec.podSourceCheck === 'drop' ? CONFIG_POD_SOURCE_CHECK : 0),
      });
      await beforeAttach?.(maps);
    } finally {
      maps.close();
    }

    const previous = readAttachState(spec.pinDir);
    const encap = attachTc(
      objects.encap.program('twill_encap'),
      { name: spec.overlayDevice, ifindex: overlayIfindex },
      'egress',
      paths.encapLink,
      previous?.encap.mode,
    );
    const hostGw = spec.backend === 'host-gw';
    const decap = attachUnderlay(
      { tc: objects.decap.program('twill_decap_tc'), xdp: objects.decap.program('twill_decap') },
      { name: spec.underlayIface, ifindex: underlayIfindex, kind: underlay.linkinfo?.info_kind },
      hostGw ? 'host-gw' : spec.decapHook,
      paths,
      previous,
    );
    // host-gw carries no VXLAN: no port to hold, nothing to reassemble (and a vxlan node's device goes).
    let tunnel: AttachState['tunnel'];
    if (hostGw) await removeTunnelDevice(spec.pinDir, previous);
    else {
      await ensureTunnelDevice(spec.tunnelDevice, spec.port, spec.subnet);
      const tunnelIfindex = ifNameToIndex(spec.tunnelDevice);
      const tunnelTc = attachTc(
        objects.decap.program('twill_tunnel_rx'),
        { name: spec.tunnelDevice, ifindex: tunnelIfindex },
        'ingress',
        paths.tunnelLink,
        previous?.tunnel?.mode,
      );
      tunnel = { iface: spec.tunnelDevice, ifindex: tunnelIfindex, mode: tunnelTc.mode, ...(await tunnelDeviceUp(spec.tunnelDevice)) };
    }
    const podProgram = objects.pod.program('twill_from_pod');
    replacePin(podProgram, paths.podProgram);
    const pods = swapPodLinks(spec.pinDir, podProgram);
    const state: AttachState = {
      spec,
      encap: { mode: encap.mode, iface: spec.overlayDevice, ifindex: overlayIfindex },
      decap: { mode: decap.mode, iface: spec.underlayIface, ifindex: underlayIfindex, hook: decap.hook, requested: spec.decapHook, reason: decap.reason },
      deliver: decap.deliver && { mode: decap.deliver, iface: spec.underlayIface, ifindex: underlayIfindex },
      fastPath: objects.fastPath,
      tunnel,
      layoutVersion: LAYOUT_VERSION,
      attachedAt: new Date().toISOString(),
    };
    writeAttachState(spec.pinDir, state);
    log.info('datapath attached', {
      pinDir: spec.pinDir,
      encap: state.encap.mode,
      decap: `${decap.mode} on ${spec.underlayIface} (${decap.reason})`,
      fastPath: `${objects.fastPath.enabled ? 'on' : 'off'}: ${objects.fastPath.reason}`,
      podLinksSwapped: pods,
      swapped: { encap: encap.swapped, decap: decap.swapped },
    });
    return { state, swapped: { encap: encap.swapped, decap: decap.swapped } };
  } finally {
    objects.close();
  }
}

/** A new program replaces the pinned one; links already running the old one are swapped by the caller. */
function replacePin(prog: BpfProgram, pin: string): void {
  mkdirSync(path.dirname(pin), { recursive: true });
  rmSync(pin, { force: true });
  prog.pin(pin);
}

const TCX_INGRESS: LinkKind = { type: 'tcx', direction: 'ingress' };
const TCX_EGRESS: LinkKind = { type: 'tcx', direction: 'egress' };
const XDP_LINK: LinkKind = { type: 'xdp' };

/** The link each pin of a node holds; the decap pin's depends on where decap ran. */
function expectedLinks(pinDir: string, previous: AttachState | undefined): Array<[string, LinkKind]> {
  const paths = pinPaths(pinDir);
  const pods = existsSync(paths.podLinks) ? readdirSync(paths.podLinks).map((veth): [string, LinkKind] => [path.join(paths.podLinks, veth), POD_LINK]) : [];
  return [
    [paths.encapLink, TCX_EGRESS],
    [paths.decapLink, previous?.decap.mode === 'xdp-link' ? XDP_LINK : TCX_INGRESS],
    [paths.deliverLink, TCX_INGRESS],
    [paths.tunnelLink, TCX_INGRESS],
    ...pods,
  ];
}

/**
 * Throws, naming the pin and what it holds, if a link twill would reuse (swap its program onto,
 * or detach) is not of the type and direction twill pins there.
 */
export function checkPinnedLinks(pinDir: string, previous: AttachState | undefined): void {
  for (const [pin, kind] of expectedLinks(pinDir, previous)) if (existsSync(pin)) BpfLink.fromPin(pin, kind).close();
}

/** Reuses a pinned link if it still hooks the same device; a link whose device vanished is replaced. */
function reusableLink(pin: string, ifindex: number, kind: LinkKind): BpfLink | undefined {
  if (!existsSync(pin)) return undefined;
  const link = BpfLink.fromPin(pin, kind);
  if (link.info().ifindex === ifindex) return link;
  log.warn('pinned link points at another or a deleted device, replacing it', { pin, linkIfindex: link.info().ifindex, ifindex });
  link.close();
  rmSync(pin, { force: true });
  return undefined;
}

/** The upgrade path: the link stays, only its program changes (atomically). */
function swapOnPinnedLink(pin: string, ifindex: number, prog: ProgramRef, kind: LinkKind): boolean {
  const existing = reusableLink(pin, ifindex, kind);
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
function attachTc(
  prog: ProgramRef,
  dev: { name: string; ifindex: number },
  direction: 'ingress' | 'egress',
  pin: string,
  previousMode?: string,
): { mode: TcMode; swapped: boolean } {
  const { ifindex } = dev;
  if (swapOnPinnedLink(pin, ifindex, prog, direction === 'ingress' ? TCX_INGRESS : TCX_EGRESS)) return { mode: 'tcx', swapped: true };
  const context = `attaching ${prog.name} at tc ${direction} of ${dev.name} (ifindex ${ifindex})`;
  try {
    if (probeTcx()) {
      pinAndRelease(BpfLink.attachTcx(prog, ifindex, direction), pin);
      return { mode: 'tcx', swapped: false };
    }
    // clsact filters live in the qdisc, not in a process: replacing one is the swap.
    tcClsactAttach(prog, ifindex, direction, { handle: 1, priority: 1 });
  } catch (err) {
    throw attachError(context, err);
  }
  return { mode: 'clsact', swapped: previousMode === 'clsact' };
}

/** An attach failure with the device and program it was for (the binding's error knows the ifindex only). */
function attachError(context: string, err: unknown): Error {
  return new Error(`${context}: ${(err as Error).message}`, { cause: err });
}

interface UnderlayDevice {
  name: string;
  ifindex: number;
  kind?: string;
}

interface UnderlayAttach {
  mode: DecapMode;
  hook: 'xdp' | 'tc';
  reason: string;
  swapped: boolean;
  /** with decap in XDP: how the delivering tc program is attached */
  deliver?: TcMode;
}

/**
 * The underlay carries twill_decap_tc at tc ingress in every case (it decaps and delivers with
 * decap in tc; with decap in XDP it delivers what XDP decapped), and twill_decap in XDP when
 * decap runs there. Moving between the two never leaves a packet without decap: to XDP, the tc
 * program keeps decapping until XDP is attached ahead of it; to tc, the tc program is in place
 * before XDP goes.
 */
function attachUnderlay(
  prog: { tc: BpfProgram; xdp: BpfProgram },
  dev: UnderlayDevice,
  requested: DataplaneSpec['decapHook'] | 'host-gw',
  paths: ReturnType<typeof pinPaths>,
  previous?: AttachState,
): UnderlayAttach {
  const before = previous?.decap.mode;
  const wasXdp = before !== undefined && !isTcMode(before);
  // The tc program is pinned as `decap` when decap runs in tc, as `deliver` when it runs in XDP.
  const tcPin = wasXdp ? paths.deliverLink : paths.decapLink;
  const tc = attachTc(prog.tc, dev, 'ingress', tcPin, wasXdp ? previous?.deliver?.mode : before);

  const choice = chooseDecapHook(requested, dev.kind);
  if (choice.hook === 'xdp') {
    const xdp = attachDecapXdp(prog.xdp, dev, paths.decapLink, choice.nativeOnly, previous);
    if (xdp.link || xdp.mode) {
      if (!wasXdp && tc.mode === 'tcx') renameSync(paths.decapLink, paths.deliverLink);
      if (xdp.link) pinAndRelease(xdp.link, paths.decapLink);
      return { mode: xdp.mode ?? 'xdp-link', hook: 'xdp', reason: choice.reason, swapped: xdp.swapped, deliver: tc.mode };
    }
    choice.reason = `${choice.reason}, but the driver has no native XDP: decap in tc`;
  }
  if (wasXdp) {
    removeXdp(previous!, paths.decapLink);
    if (tc.mode === 'tcx') renameSync(paths.deliverLink, paths.decapLink);
  }
  return { mode: tc.mode, hook: 'tc', reason: choice.reason, swapped: tc.swapped && !wasXdp };
}

/**
 * twill_decap in XDP. Returns the new link unpinned (the caller pins it once the tc program's pin
 * has moved out of the way), or the mode of an attachment that needs no pin; neither when
 * nativeOnly and the driver has no native XDP. Falls back to an older way of attaching only when
 * the kernel or driver lacks the newer one (attach-fallback.ts); any other failure is thrown,
 * naming the device and the program.
 */
function attachDecapXdp(
  prog: BpfProgram,
  dev: UnderlayDevice,
  pin: string,
  nativeOnly: boolean,
  previous?: AttachState,
): { link?: BpfLink; mode?: DecapMode; swapped: boolean } {
  const { ifindex } = dev;
  if (previous?.decap.mode === 'xdp-link' && swapOnPinnedLink(pin, ifindex, prog, XDP_LINK)) return { mode: 'xdp-link', swapped: true };
  // A netlink attachment (from a kernel without XDP links) is replaced in place: a link would be refused beside it.
  if (previous?.decap.mode === 'xdp-native' || previous?.decap.mode === 'xdp-generic') {
    xdpAttachLegacy(prog, ifindex, legacyXdpMode(previous.decap.mode));
    return { mode: previous.decap.mode, swapped: true };
  }
  const context = `attaching ${prog.name} in XDP on ${dev.name} (ifindex ${ifindex})`;
  try {
    return { link: BpfLink.attachXdp(prog, ifindex, nativeOnly ? 'native' : 'any'), swapped: false };
  } catch (err) {
    const lacking = unsupportedAttach('xdp-link', err, context);
    if (lacking === 'native-xdp' && nativeOnly) {
      log.info('no native XDP on the underlay driver: decap runs in tc', { iface: dev.name, ifindex, error: (err as Error).message });
      return { swapped: false };
    }
    if (lacking !== 'xdp-link') throw attachError(context, err);
    log.warn('no XDP links in this kernel, attaching through netlink instead', { iface: dev.name, ifindex, error: (err as Error).message });
  }
  try {
    xdpAttachLegacy(prog, ifindex, 'native');
    return { mode: 'xdp-native', swapped: false };
  } catch (err) {
    unsupportedAttach('xdp-native', err, context);
    if (nativeOnly) {
      log.info('no native XDP on the underlay driver: decap runs in tc', { iface: dev.name, ifindex, error: (err as Error).message });
      return { swapped: false };
    }
    log.warn('native XDP unavailable, using generic XDP (runs after GRO: slower)', { iface: dev.name, ifindex, error: (err as Error).message });
  }
  try {
    xdpAttachLegacy(prog, ifindex, 'generic');
  } catch (err) {
    throw attachError(context, err);
  }
  return { mode: 'xdp-generic', swapped: false };
}

/** What the kernel or driver lacks, when that is what the failed attach means; any other failure is rethrown with its context. */
function unsupportedAttach(attempt: 'xdp-link' | 'xdp-native', err: unknown, context: string) {
  const lacking = err instanceof BpfError ? unsupportedBy(attempt, err.errno) : undefined;
  if (!lacking) throw attachError(context, err);
  return lacking;
}

/** Takes decap out of XDP (the tc program is already there to take over). */
function removeXdp(previous: AttachState, pin: string): void {
  if (previous.decap.mode === 'xdp-link' && existsSync(pin)) {
    const link = BpfLink.fromPin(pin, XDP_LINK);
    link.detach();
    link.close();
    rmSync(pin);
  } else if (previous.decap.mode === 'xdp-native' || previous.decap.mode === 'xdp-generic') {
    xdpDetachLegacy(previous.decap.ifindex, legacyXdpMode(previous.decap.mode));
  }
}

/**
 * Takes the tunnel device away (its link goes with it): before flannel.<VNI> is brought up on a
 * switch to kernel VXLAN, and on detach. Fragmented VXLAN waits for the new owner of the port.
 */
export async function removeTunnelDevice(pinDir: string, state = readAttachState(pinDir)): Promise<string[]> {
  const removed: string[] = [];
  const dev = state?.tunnel?.iface ?? TUNNEL_DEVICE;
  if (await removeOverlayDevice(dev)) removed.push(`device ${dev}`);
  const pin = pinPaths(pinDir).tunnelLink;
  if (existsSync(pin)) {
    rmSync(pin);
    removed.push(pin);
  }
  if (state?.tunnel) writeAttachState(pinDir, { ...state, tunnel: undefined });
  return removed;
}

/** After flannel.<VNI> gave the VXLAN port back: the tunnel device comes up (or says why not). */
export async function retryTunnelDeviceUp(pinDir: string): Promise<{ up: boolean; reason?: string }> {
  const state = readAttachState(pinDir);
  if (!state?.tunnel) return { up: false, reason: 'no tunnel device was made' };
  if (state.tunnel.up) return { up: true };
  const res = await tunnelDeviceUp(state.tunnel.iface);
  writeAttachState(pinDir, { ...state, tunnel: { ...state.tunnel, up: res.up, reason: res.reason } });
  return res;
}

/**
 * Removes everything attachDataplane made: links (detached, not just unpinned) including the
 * pods', the overlay device and its route, and the pin directory with the maps and programs.
 * Runs inside the node's netns.
 */
export async function detachDataplane(pinDir: string): Promise<{ removed: string[] }> {
  const removed: string[] = [];
  const state = readAttachState(pinDir);
  const paths = pinPaths(pinDir);
  if (state && !isTcMode(state.decap.mode) && state.decap.mode !== 'xdp-link') {
    removeXdp(state, paths.decapLink);
    removed.push(`${state.decap.mode} on ${state.decap.iface}`);
  }
  if (state?.decap.mode === 'clsact' || state?.deliver?.mode === 'clsact') {
    tcClsactDetach(state.decap.ifindex, 'ingress', { handle: 1, priority: 1 });
    removed.push(`clsact ingress on ${state.decap.iface}`);
  }
  removed.push(...detachPodLinks(pinDir));
  removed.push(...(await removeHeadroomPorts()));
  removed.push(...(await removeTunnelDevice(pinDir, state)));
  for (const pin of [paths.encapLink, paths.decapLink, paths.deliverLink]) {
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
  const dev = state?.spec.overlayDevice ?? OVERLAY_DEVICE;
  if (await removeOverlayDevice(dev)) removed.push(`device ${dev}`);
  if (existsSync(pinDir)) {
    rmSync(pinDir, { recursive: true, force: true });
    removed.push(pinDir);
  }
  rmSync(path.dirname(paths.attachState), { recursive: true, force: true });
  return { removed };
}
