import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BPF_MAP_TYPES, BpfError, BpfMap, BpfObject, type BpfMapKind } from '../bpf/libbpf.js';
import { EVENTS_BYTES, EVENTS_MAP, mapSpecs } from '../../maps/layout.js';
import { logger } from '../util/log.js';
import { bpfObjectDir } from '../util/paths.js';
import type { FastPathState } from './attach-state.js';

/*
 * The BPF objects a node's datapath is made of, loaded for attach: which build of them this
 * kernel takes (with or without the conntrack kfuncs, and so whether the fast path can run), and
 * the pinned maps they share with what an earlier build left.
 */

const log = logger('dataplane');

/**
 * Where the BPF objects come from: the checkout's build, unless TWILL_BPF_DIR names another
 * directory (a packaged install, or an upgrade test loading a second build).
 */
export const objectDirInUse = () => process.env.TWILL_BPF_DIR || bpfObjectDir();

/** Every pinned map's shape as this build declares it; the ring buffer has no key or value. */
const pinnedShapes = [
  ...Object.entries(mapSpecs).map(([name, s]) => ({ name, kind: s.kind, keySize: s.key.size, valueSize: s.value.size, maxEntries: s.maxEntries })),
  { name: EVENTS_MAP, kind: 'ringbuf', keySize: 0, valueSize: 0, maxEntries: EVENTS_BYTES },
];

interface RetiredPin {
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
  for (const want of pinnedShapes) {
    const pin = `${pinDir}/${want.name}`;
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
    const type = (want.kind in BPF_MAP_TYPES ? BPF_MAP_TYPES[want.kind as BpfMapKind] : undefined) ?? /^type (\d+)/.exec(found)?.[1]; // a kind not listed there: judged by sizes only
    const expected = `type ${type}, key ${want.keySize} B, value ${want.valueSize} B, ${want.maxEntries} entries`;
    if (found === expected) continue;
    log.warn('pinned map has another layout than this build: replacing it', { pin, found, expected });
    rmSync(pin, { force: true });
    retired.push({ pin, found, expected });
  }
  return retired;
}

type ConntrackSupport = 'present' | 'absent' | 'unavailable';

/**
 * Pure: whether the kernel has conntrack (`present`: built in or loaded), cannot have it
 * (`absent`: its module list, modules.dep, has no nf_conntrack), or may get it later though it is
 * not loaded now (`unavailable`: the module exists, or the module list cannot be read, as in a
 * container without /lib/modules). Only `absent` lets the programs skip the conntrack check.
 */
export function conntrackSupport(loaded: boolean, modulesDep: string | undefined): ConntrackSupport {
  if (loaded) return 'present';
  if (modulesDep === undefined || /nf_conntrack\.ko/.test(modulesDep)) return 'unavailable';
  return 'absent';
}

/**
 * The kernel's conntrack, its module loaded here if it is not yet (kube-proxy may load it later,
 * and the programs must look flows up from the start).
 */
function kernelConntrack(): ConntrackSupport {
  const loaded = () => existsSync('/sys/module/nf_conntrack');
  if (!loaded() && spawnSync('modprobe', ['nf_conntrack']).status === 0 && loaded())
    log.info('loaded the nf_conntrack module, so that the fast path can respect NAT state');
  let modulesDep: string | undefined;
  try {
    modulesDep = readFileSync(`/lib/modules/${os.release()}/modules.dep`, 'utf8');
  } catch {
    modulesDep = undefined;
  }
  return conntrackSupport(loaded(), modulesDep);
}

/** What libbpf says when an extern kfunc is not in the kernel's (or a module's) BTF. */
const MISSING_CT_KFUNC = /extern \(func ksym\) 'bpf_(skb_ct_lookup|ct_release)'/;

export interface LoadedObjects {
  encap: BpfObject;
  decap: BpfObject;
  pod: BpfObject;
  fastPath: FastPathState;
  close(): void;
}

/**
 * The programs that consult conntrack (decap's delivery, the pods' send side) come in two
 * builds. The one with the conntrack kfuncs is loaded where it can be; without them the fast
 * path is only safe on a kernel that has no conntrack at all (no NAT state can exist there),
 * and is turned off everywhere else (the stack path goes on as before).
 */
export function loadObjects(objectDir: string, pinDir: string, wantFastPath: boolean): LoadedObjects {
  const opened: BpfObject[] = [];
  const load = (file: string) => {
    const obj = BpfObject.open(path.join(objectDir, file), { pinRootPath: pinDir });
    opened.push(obj);
    obj.load();
    return obj;
  };
  const close = () => opened.forEach((o) => o.close());
  // What the kernel allows, whatever was asked for; then the switch.
  const state = (allowed: boolean, conntrack: boolean, why: string): FastPathState => ({
    requested: wantFastPath,
    enabled: wantFastPath && allowed,
    conntrack,
    reason: wantFastPath || !allowed ? why : 'turned off (--fast-path=false)',
  });
  try {
    const encap = load('encap.bpf.o');
    const conntrack = kernelConntrack();
    if (conntrack === 'absent')
      return {
        encap,
        decap: load('decap-noct.bpf.o'),
        pod: load('pod-noct.bpf.o'),
        fastPath: state(true, false, 'this kernel has no conntrack, so no NAT state to respect'),
        close,
      };
    if (conntrack === 'unavailable') {
      const fastPath = state(
        false,
        false,
        'conntrack is a module this agent could not load (no modprobe or no /lib/modules?): NAT state could appear unseen, so stack path only',
      );
      log.warn('fast path off', { reason: fastPath.reason });
      return { encap, decap: load('decap-noct.bpf.o'), pod: load('pod-noct.bpf.o'), fastPath, close };
    }
    try {
      const decap = load('decap.bpf.o');
      const pod = load('pod.bpf.o');
      return { encap, decap, pod, fastPath: state(true, true, 'flows unknown to conntrack bypass the stack'), close };
    } catch (err) {
      // Only a missing kfunc is this case; any other refusal is a real error, reported as such.
      if (!(err instanceof BpfError) || !MISSING_CT_KFUNC.test(`${err.message}\n${err.verifierLog ?? ''}`)) throw err;
      const fastPath = state(false, false, 'the kernel cannot look flows up in conntrack from BPF (no conntrack kfuncs): stack path only');
      log.warn('fast path off: the programs that consult conntrack did not load', { reason: fastPath.reason, error: err.message.split('\n')[0] });
      opened.splice(1).forEach((o) => o.close());
      return { encap, decap: load('decap-noct.bpf.o'), pod: load('pod-noct.bpf.o'), fastPath, close };
    }
  } catch (err) {
    close();
    throw err;
  }
}
