import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { twillPluginTarget } from '../cni/install.js';
import { detachDataplane } from '../dataplane/attach.js';
import { readAttachState } from '../dataplane/attach-state.js';
import { directRoutesIn, DirectRoutes } from '../dataplane/direct-routes.js';
import { choiceRecordPath } from '../dataplane/choice-record.js';
import { removeKernelVxlan } from '../dataplane/flannel-vxlan.js';
import { isHeadroomPort } from '../dataplane/headroom.js';
import { pinPaths } from '../dataplane/spec.js';
import { endpointsDirFor } from '../endpoints/records.js';
import { parseIptablesSave, type SavedTable } from '../masq/rules.js';
import { formatCidr } from '../net/ipv4.js';
import { ipJson, linkShow } from '../netlink/ip.js';
import { parseSubnetFile } from '../subnet/subnet-file.js';
import { run } from '../util/exec.js';
import { logger } from '../util/log.js';
import {
  agentPinDir,
  describeUnpinned,
  flannelDevice,
  takenByDetach,
  type AgentProcessFound,
  type NodeFindings,
  type Step,
  type UninstallOptions,
  type UnpinnedProgram,
} from './plan.js';

const log = logger('uninstall');

/*
 * The edge of `twill uninstall`: looks at the node (processes, netlink, bpffs, iptables, files)
 * and carries a plan out. Runs in the node's network namespace, like the agent.
 */

const readNul = (file: string) => readFileSync(file, 'utf8').split('\0').filter(Boolean);
const netnsOf = (pid: number | 'self') => {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
};

/** Every twill agent in this PID namespace (the DaemonSet's uninstall runs with hostPID for this). */
export function findAgents(): AgentProcessFound[] {
  const ours = netnsOf('self');
  const out: AgentProcessFound[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let pinDir: string | undefined;
    try {
      const env = Object.fromEntries(readNul(`/proc/${entry}/environ`).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      pinDir = agentPinDir(readNul(`/proc/${entry}/cmdline`), env);
    } catch {
      continue; // exited meanwhile, or a kernel thread
    }
    if (pinDir) out.push({ pid: Number(entry), pinDir, sameNetns: netnsOf(Number(entry)) === ours });
  }
  return out;
}

/** Files and links under the pin dir, deepest last, as paths. */
function pinsUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((p) => path.join(dir, p))
    .sort();
}

const XDP_MODES = { 1: 'xdpdrv', 2: 'xdpgeneric', 3: 'xdpoffload' } as const;
const isTwillProgram = (name: string | undefined) => name?.startsWith('twill_') === true;

/** Every twill program on a device of this namespace that no pin holds: XDP by netlink, clsact filters. */
export async function findUnpinnedPrograms(): Promise<UnpinnedProgram[]> {
  type Link = { ifname: string; xdp?: { attached?: { mode: number; prog?: { name?: string } }[] } };
  type Filter = { pref: number; options?: { handle?: string; prog?: { name?: string } } };
  const out: UnpinnedProgram[] = [];
  for (const link of await ipJson<Link[]>(['-d', 'link', 'show'])) {
    for (const a of link.xdp?.attached ?? []) {
      const mode = XDP_MODES[a.mode as keyof typeof XDP_MODES];
      // An XDP link shows here too, in its mode: the detach takes those, and it runs first.
      if (mode && isTwillProgram(a.prog?.name)) out.push({ dev: link.ifname, prog: a.prog!.name!, hook: { kind: 'xdp', mode } });
    }
    for (const direction of ['ingress', 'egress'] as const) {
      const res = await run(['tc', '-j', 'filter', 'show', 'dev', link.ifname, direction], { allowFailure: true });
      if (res.code !== 0 || !res.stdout.trim()) continue; // no clsact qdisc, or the device went
      for (const f of JSON.parse(res.stdout) as Filter[])
        if (f.options?.handle && isTwillProgram(f.options.prog?.name))
          out.push({ dev: link.ifname, prog: f.options.prog!.name!, hook: { kind: 'tc', direction, pref: f.pref, handle: f.options.handle } });
    }
  }
  return out;
}

async function iptablesSaved(family: 4 | 6): Promise<Map<string, SavedTable> | undefined> {
  const res = await run([family === 6 ? 'ip6tables-save' : 'iptables-save'], { allowFailure: true }).catch(() => undefined);
  return res?.code === 0 ? parseIptablesSave(res.stdout) : undefined;
}

/** flannel's routes to directly routed peers, found with the network and subnet length the subnet file names. */
async function directRoutesNow(subnetFile: string): Promise<{ routes: string[]; network?: string; subnetLen?: number }> {
  let f;
  try {
    f = parseSubnetFile(readFileSync(subnetFile, 'utf8'));
  } catch {
    return { routes: [] };
  }
  if (!f.network || !f.subnet) return { routes: [] };
  const network = formatCidr(f.network);
  const routes = directRoutesIn(await ipJson(['-4', 'route', 'show', 'table', 'main']), network, f.subnet.len);
  return { routes: [...routes].map(([s, gw]) => `${s}/${f.subnet!.len} via ${gw}`), network, subnetLen: f.subnet.len };
}

/** A copy the DaemonSet's install-cni-plugin made: <dir>/<version> (complete) or <version>.tmp, holding twill's package.json. */
function installCopies(dir: string): string[] {
  if (!dir || !existsSync(dir)) return [];
  return readdirSync(dir)
    .map((e) => path.join(dir, e))
    .filter((p) => {
      try {
        return (JSON.parse(readFileSync(path.join(p, 'package.json'), 'utf8')) as { name?: string }).name === 'twill';
      } catch {
        return false;
      }
    });
}

export async function findOnNode(o: UninstallOptions, overlayDevice: string, tunnelDevice: string): Promise<NodeFindings> {
  const attachState = pinPaths(o.pinDir).attachState;
  const devices: string[] = [];
  for (const d of [overlayDevice, tunnelDevice]) if (await linkShow(d)) devices.push(d);
  const vxlan = await ipJson<{ ifname: string; linkinfo?: { info_kind?: string } }[]>(['-d', 'link', 'show', 'type', 'vxlan']);
  // The pod bridges' headroom ports (dataplane/headroom.ts), which the detach removes with the rest.
  devices.push(...vxlan.map((l) => l.ifname).filter(isHeadroomPort));
  const plugin = existsSync(o.cniPlugin) ? readFileSync(o.cniPlugin, 'latin1') : undefined;
  const target = plugin === undefined ? undefined : twillPluginTarget(plugin);
  const endpointsDir = endpointsDirFor(o.subnetFile);
  return {
    agents: findAgents(),
    unpinnedPrograms: (await findUnpinnedPrograms()).filter((u) => !takenByDetach(u, readAttachState(o.pinDir), devices)),
    bpf: {
      pins: pinsUnder(o.pinDir),
      attachState: existsSync(path.dirname(attachState)) ? path.dirname(attachState) : undefined,
      devices,
      kernelRecord: existsSync(choiceRecordPath(o.pinDir)) ? choiceRecordPath(o.pinDir) : undefined,
    },
    vxlanDevices: vxlan.map((l) => l.ifname).filter((n) => flannelDevice(n)),
    directRoutes: (await directRoutesNow(o.subnetFile)).routes,
    iptables: [
      { family: 4, saved: await iptablesSaved(4) },
      { family: 6, saved: await iptablesSaved(6) },
    ],
    files: {
      subnetFile: existsSync(o.subnetFile),
      endpointsDir: existsSync(endpointsDir) ? endpointsDir : undefined,
      cniPlugin: plugin === undefined ? undefined : { twill: target !== undefined, runs: target?.root },
      cniConf: o.cniConf !== '' && existsSync(o.cniConf),
      installCopies: installCopies(o.installDir),
    },
  };
}

const RUN_TWILL = '/run/twill';

/**
 * The empty directories above a removed record under /run/twill (dataplane/, kernel/), up to
 * /run/twill itself, which stays: the DaemonSet mounts it there.
 */
function pruneEmptyParents(removed: string): void {
  for (let dir = path.dirname(removed); dir.startsWith(`${RUN_TWILL}/`); dir = path.dirname(dir)) {
    if (!existsSync(dir) || readdirSync(dir).length > 0) return;
    rmdirSync(dir);
  }
}

/** Carries one step out; what it removed, one line each. */
export async function executeStep(s: Step, o: UninstallOptions, overlayDevice: string): Promise<string[]> {
  switch (s.kind) {
    case 'bpf-datapath': {
      // The agent's own detach: XDP and tc attachments, pod links, twill-rx, twill0, pins, attach state.
      const removed = (await detachDataplane(s.pinDir)).removed;
      // A twill0 of another name than the attach state knows (or no attach state at all).
      if (await linkShow(overlayDevice)) {
        await run(['ip', 'link', 'del', overlayDevice]);
        removed.push(`device ${overlayDevice}`);
      }
      pruneEmptyParents(path.dirname(pinPaths(s.pinDir).attachState));
      return removed;
    }
    case 'unpinned-programs': {
      // Looked for again: the detach before may have taken some of them.
      const removed: string[] = [];
      for (const u of await findUnpinnedPrograms()) {
        const res =
          u.hook.kind === 'xdp'
            ? await run(['ip', 'link', 'set', 'dev', u.dev, u.hook.mode, 'off'], { allowFailure: true })
            : await run(['tc', 'filter', 'del', 'dev', u.dev, u.hook.direction, 'pref', String(u.hook.pref), 'handle', u.hook.handle, 'bpf'], {
                allowFailure: true,
              });
        // An XDP link some process still holds refuses netlink: said, and the rest goes on.
        if (res.code === 0) removed.push(describeUnpinned(u));
        else log.warn('cannot remove a twill program', { program: describeUnpinned(u), error: res.stderr.trim() });
      }
      return removed;
    }
    case 'vxlan-device':
      // Routes first, then the device, as the agent leaves kernel VXLAN.
      return (await removeKernelVxlan(s.vni, undefined, s.family)) ? [`device ${s.name} and its neighbour, FDB and route entries`] : [];
    case 'direct-routes': {
      const { network, subnetLen } = await directRoutesNow(o.subnetFile);
      if (!network || subnetLen === undefined) return [];
      const { removed } = await new DirectRoutes(network, subnetLen).sync(new Map());
      return removed ? s.routes.map((r) => `route ${r}`) : [];
    }
    case 'iptables':
      await run([s.family === 6 ? 'ip6tables-restore' : 'iptables-restore', '-w', '5', '--noflush'], { input: s.script });
      return s.chains.map((c) => `${s.family === 6 ? 'ip6tables' : 'iptables'} ${c} and its jump`);
    case 'file':
    case 'directory': {
      rmSync(s.path, { recursive: s.kind === 'directory', force: true });
      pruneEmptyParents(s.path);
      const parent = path.dirname(s.path);
      // An install dir left empty goes too; any other parent (/opt/cni/bin, /run/flannel) stays.
      if (s.kind === 'directory' && o.installDir && parent === path.resolve(o.installDir) && readdirSync(parent).length === 0) rmdirSync(parent);
      log.info('removed', { path: s.path, what: s.what });
      return [`${s.path} (${s.what})`];
    }
  }
}
