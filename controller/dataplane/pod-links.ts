import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BpfLink, PinnedProgram, probeTcx, tcClsactAttach, type LinkKind, type ProgramRef } from '../bpf/libbpf.js';
import { logger } from '../util/log.js';
import { pinPaths } from './spec.js';

const log = logger('pod-links');

/*
 * The send half of the fast path runs at tcx ingress of every local pod's host-side veth. Each
 * attachment is a link pinned as <pinDir>/links/pods/<veth>, so it outlives the agent like the
 * node's own links, and an upgrade swaps its program in place. A veth that is deleted takes its
 * attachment with it; the pin left behind is defunct and is removed by the next sync.
 */

/** What every pin under links/pods holds. */
export const POD_LINK: LinkKind = { type: 'tcx', direction: 'ingress' };

export interface PodVeth {
  ifname: string;
  ifindex: number;
}

export interface PodLink extends PodVeth {
  progId: number;
}

/** Every pinned pod link; ifindex 0 means the veth is gone. */
export function listPodLinks(pinDir: string): PodLink[] {
  const dir = pinPaths(pinDir).podLinks;
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map((ifname) => {
    const link = BpfLink.fromPin(path.join(dir, ifname));
    try {
      const i = link.info();
      return { ifname, ifindex: i.ifindex ?? 0, progId: i.progId };
    } finally {
      link.close();
    }
  });
}

/** After a load: every live pod link runs the program just pinned (atomically), defunct pins go. */
export function swapPodLinks(pinDir: string, prog: ProgramRef): number {
  const dir = pinPaths(pinDir).podLinks;
  let swapped = 0;
  for (const l of listPodLinks(pinDir)) {
    const pin = path.join(dir, l.ifname);
    if (l.ifindex === 0) {
      rmSync(pin, { force: true });
      continue;
    }
    const link = BpfLink.fromPin(pin, POD_LINK);
    try {
      link.update(prog);
      swapped++;
    } finally {
      link.close();
    }
  }
  return swapped;
}

/** Veths attached with clsact (kernels without tcx) by this process: filters have no pins to list. */
const clsactAttached = new Set<number>();

/**
 * Makes the pod links exactly `wanted`: attaches the pinned program to veths that lack it, and
 * detaches links of veths that are no longer wanted (pod gone, fast path off).
 */
export function syncPodLinks(pinDir: string, wanted: readonly PodVeth[]): { attached: string[]; removed: string[] } {
  const dir = pinPaths(pinDir).podLinks;
  const want = new Map(wanted.map((w) => [w.ifname, w]));
  const attached: string[] = [];
  const removed: string[] = [];
  const have = new Set<string>();
  for (const l of listPodLinks(pinDir)) {
    const w = want.get(l.ifname);
    if (w && w.ifindex === l.ifindex) {
      have.add(l.ifname);
      continue;
    }
    const pin = path.join(dir, l.ifname);
    if (l.ifindex !== 0) {
      const link = BpfLink.fromPin(pin, POD_LINK);
      link.detach();
      link.close();
    }
    rmSync(pin, { force: true });
    removed.push(l.ifname);
  }
  const missing = wanted.filter((w) => !have.has(w.ifname) && !clsactAttached.has(w.ifindex));
  if (missing.length === 0) return { attached, removed };
  const progPin = pinPaths(pinDir).podProgram;
  if (!existsSync(progPin)) throw new Error(`no pod program pinned at ${progPin}: the datapath is not attached`);
  const prog = PinnedProgram.fromPin(progPin);
  try {
    mkdirSync(dir, { recursive: true });
    for (const w of missing) {
      try {
        if (probeTcx()) {
          const link = BpfLink.attachTcx(prog, w.ifindex, 'ingress');
          link.pin(path.join(dir, w.ifname));
          link.close();
        } else {
          tcClsactAttach(prog, w.ifindex, 'ingress', { handle: 1, priority: 1 });
          clsactAttached.add(w.ifindex);
        }
        attached.push(w.ifname);
      } catch (err) {
        // The veth may have gone since it was listed; the pod's traffic stays on the stack path.
        log.warn('cannot attach the fast path to a pod veth', { veth: w.ifname, ifindex: w.ifindex, error: (err as Error).message });
      }
    }
  } finally {
    prog.close();
  }
  return { attached, removed };
}

/** Detaches and unpins every pod link (uninstall, or a node leaving the BPF datapath). */
export function detachPodLinks(pinDir: string): string[] {
  return syncPodLinks(pinDir, []).removed.map((ifname) => `${pinPaths(pinDir).podLinks}/${ifname}`);
}
