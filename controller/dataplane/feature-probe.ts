import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import os from 'node:os';
import {
  BPF_MAP_TYPES,
  BpfError,
  BpfLink,
  Btf,
  errnoText,
  ifNameToIndex,
  loadInstructions,
  probeHelper as libbpfProbeHelper,
  probeMapType,
  setThreadNetns,
  unsupportedBy,
  type ProgramRef,
} from '../bpf/libbpf.js';
import type { Capability, FeatureProbe } from './dataplane-choice.js';

/*
 * Real probes of the kernel's features, for `twill probe` and `--dataplane auto`: libbpf's own probes (each loads a
 * tiny program or map and asks the verifier), BTF lookups of the conntrack kfuncs, a tcx attach
 * on a veth in a throwaway network namespace, and an XDP attach in driver mode on the named
 * underlay. Everything made here is removed before the function returns.
 */

const PROG_TYPE = { sched_cls: 3, xdp: 6 } as const;
/** enum bpf_func_id */
const HELPER = { redirect_neigh: 152, redirect_peer: 155, check_mtu: 163 } as const;
/** The two instructions of the trivial program (BPF_ALU64 | BPF_MOV | BPF_K, and BPF_JMP | BPF_EXIT): r0 = imm; exit. */
const BPF_MOV64_IMM = 0xb7;
const BPF_EXIT = 0x95;
const BPF_INSN_SIZE = 8;
const VMLINUX_BTF = '/sys/kernel/btf/vmlinux';
/** Names of what the probe creates: tkm-<pid>, so a leftover says whose it was. */
const PROBE_PREFIX = 'tkm';

/** libbpf_probe_*: 1 yes, 0 no, -errno when the probe could not tell. */
function fromLibbpf(rc: number, what: string): Capability {
  if (rc === 1) return { present: true, detail: `${what}: supported` };
  if (rc === 0) return { present: false, detail: `${what}: the verifier refuses it` };
  return { present: undefined, detail: `${what}: probe failed, ${errnoText(-rc)} (errno ${-rc})` };
}

function probeHelper(name: keyof typeof HELPER): Capability {
  return fromLibbpf(libbpfProbeHelper(PROG_TYPE.sched_cls, HELPER[name]), `libbpf_probe_bpf_helper(sched_cls, bpf_${name})`);
}

/** A program that returns `ret` at once: the smallest thing the kernel will attach. */
function loadTrivialProgram(type: keyof typeof PROG_TYPE, ret: number): ProgramRef & { close(): void } {
  const insns = Buffer.alloc(2 * BPF_INSN_SIZE);
  insns.writeUInt8(BPF_MOV64_IMM, 0); // r0 = ret
  insns.writeInt32LE(ret, 4); // the immediate
  insns.writeUInt8(BPF_EXIT, BPF_INSN_SIZE);
  return loadInstructions(PROG_TYPE[type], `${PROBE_PREFIX}_${type}`, insns);
}

function ip(args: string[]): void {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed (exit ${r.status ?? 'signal'}): ${(r.stderr || r.error?.message || '').trim()}`);
}

/**
 * Runs fn with this thread in the named netns. Synchronous on purpose: koffi calls run on the
 * calling thread, and only that thread is moved (libuv's threads stay where they are).
 */
function inNetns<T>(netns: string, fn: () => T): T {
  const home = openSync('/proc/thread-self/ns/net', 'r');
  const target = openSync(`/run/netns/${netns}`, 'r');
  try {
    if (!setThreadNetns(target)) throw new Error(`setns into netns ${netns} failed`);
    let out: { value: T } | { error: unknown };
    try {
      out = { value: fn() };
    } catch (error) {
      out = { error };
    }
    // A thread stranded in the other netns outweighs fn's own result or error (kept as the cause).
    if (!setThreadNetns(home))
      throw new Error(`setns back from netns ${netns} failed: this process is stranded there`, { cause: 'error' in out ? out.error : undefined });
    if ('error' in out) throw out.error;
    return out.value;
  } finally {
    closeSync(target);
    closeSync(home);
  }
}

/** A tcx link on a veth in a throwaway netns: the attach itself, not a guess from the version. */
function probeTcxAttach(): Capability {
  const netns = `${PROBE_PREFIX}-${process.pid}`;
  let prog: (ProgramRef & { close(): void }) | undefined;
  try {
    prog = loadTrivialProgram('sched_cls', 0);
    ip(['netns', 'add', netns]);
    ip(['-n', netns, 'link', 'add', `${PROBE_PREFIX}0`, 'type', 'veth', 'peer', 'name', `${PROBE_PREFIX}1`]);
    const p = prog;
    return inNetns(netns, () => {
      try {
        BpfLink.attachTcx(p, ifNameToIndex(`${PROBE_PREFIX}0`), 'ingress').close();
        return { present: true, detail: `tcx ingress link on a veth in netns ${netns}: attached` };
      } catch (err) {
        if (err instanceof BpfError && unsupportedBy('tcx-link', err.errno))
          return { present: false, detail: `tcx ingress link on a veth in netns ${netns}: the kernel refuses the attach type (EINVAL)` };
        return { present: undefined, detail: `tcx ingress link on a veth in netns ${netns}: ${(err as Error).message}` };
      }
    });
  } catch (err) {
    return { present: undefined, detail: `tcx probe could not run: ${(err as Error).message}` };
  } finally {
    prog?.close();
    spawnSync('ip', ['netns', 'del', netns]);
  }
}

/** The kernel's own type information: kfuncs are found in it, and twill's kfunc externs need it. */
function probeBtf(): { cap: Capability; vmlinux?: Btf } {
  if (!existsSync(VMLINUX_BTF)) return { cap: { present: false, detail: `${VMLINUX_BTF} missing (CONFIG_DEBUG_INFO_BTF off)` } };
  const btf = Btf.parse(VMLINUX_BTF);
  if (!btf) return { cap: { present: undefined, detail: `btf__parse(${VMLINUX_BTF}) failed` } };
  return { cap: { present: true, detail: `${VMLINUX_BTF} parsed` }, vmlinux: btf };
}

/**
 * bpf_skb_ct_lookup and bpf_ct_release as BTF functions, in vmlinux (conntrack built in) or in
 * nf_conntrack's module BTF. The module is loaded first if it can be, as the agent does at attach.
 */
function probeConntrackKfuncs(vmlinux: Btf | undefined): Capability {
  const kfuncs = ['bpf_skb_ct_lookup', 'bpf_ct_release'];
  if (!vmlinux) return { present: undefined, detail: 'no vmlinux BTF to look kfuncs up in' };
  const has = (btf: Btf) => kfuncs.every((f) => btf.hasFunction(f));
  if (has(vmlinux)) return { present: true, detail: `${kfuncs.join(', ')} in ${VMLINUX_BTF}` };
  const modBtf = '/sys/kernel/btf/nf_conntrack';
  let loaded = '';
  if (!existsSync(modBtf) && spawnSync('modprobe', ['nf_conntrack']).status === 0) loaded = ' (module loaded for the probe)';
  if (!existsSync(modBtf)) return { present: false, detail: `not in ${VMLINUX_BTF}, and no nf_conntrack module BTF (${modBtf})` };
  const split = Btf.parseSplit(modBtf, vmlinux);
  if (!split) return { present: undefined, detail: `btf__parse_split(${modBtf}) failed` };
  try {
    return has(split)
      ? { present: true, detail: `${kfuncs.join(', ')} in ${modBtf}${loaded}` }
      : { present: false, detail: `${kfuncs.join(', ')} not in ${VMLINUX_BTF} nor ${modBtf}${loaded}` };
  } finally {
    split.free();
  }
}

/**
 * XDP in driver mode on the underlay. A device that already runs XDP (twill's own decap, say) is
 * judged by that attachment; otherwise an XDP_PASS program is attached in driver mode and removed
 * at once (some drivers, virtio_net among them, reconfigure their queues for it).
 */
function probeXdpNative(iface: string): Capability {
  const shown = spawnSync('ip', ['-j', '-d', 'link', 'show', 'dev', iface], { encoding: 'utf8' });
  if (shown.status !== 0) return { present: undefined, detail: `ip link show ${iface}: ${shown.stderr.trim()}` };
  const [link] = JSON.parse(shown.stdout) as { xdp?: { mode?: number }; linkinfo?: { info_kind?: string } }[];
  const XDP_ATTACHED_DRV = 1;
  if (link?.xdp?.mode !== undefined)
    return link.xdp.mode === XDP_ATTACHED_DRV
      ? { present: true, detail: `${iface} already runs XDP in driver mode` }
      : { present: undefined, detail: `${iface} already runs XDP in another mode (${link.xdp.mode}): not probed` };
  const driver = link?.linkinfo?.info_kind ?? driverOf(iface);
  let prog: (ProgramRef & { close(): void }) | undefined;
  try {
    prog = loadTrivialProgram('xdp', 2 /* XDP_PASS */);
    BpfLink.attachXdp(prog, ifNameToIndex(iface), 'native').close();
    return { present: true, detail: `XDP link in driver mode on ${iface} (${driver}): attached and removed` };
  } catch (err) {
    if (err instanceof BpfError && unsupportedBy('xdp-link', err.errno))
      return { present: false, detail: `XDP link in driver mode on ${iface} (${driver}): ${errnoText(err.errno)}` };
    return { present: undefined, detail: `XDP probe on ${iface}: ${(err as Error).message}` };
  } finally {
    prog?.close();
  }
}

function driverOf(iface: string): string {
  const r = spawnSync('readlink', ['-f', `/sys/class/net/${iface}/device/driver`], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim() ? r.stdout.trim().split('/').pop()! : 'driver unknown';
}

/** Probes the running kernel; must run as root (CAP_BPF and CAP_NET_ADMIN) in the node's netns. */
export function probeKernelFeatures(opts: { iface?: string } = {}): FeatureProbe {
  const btf = probeBtf();
  try {
    return {
      kernel: os.release(),
      capabilities: {
        btf: btf.cap,
        tcx: probeTcxAttach(),
        redirectPeer: probeHelper('redirect_peer'),
        redirectNeigh: probeHelper('redirect_neigh'),
        checkMtu: probeHelper('check_mtu'),
        conntrackKfuncs: probeConntrackKfuncs(btf.vmlinux),
        ringbuf: fromLibbpf(probeMapType(BPF_MAP_TYPES.ringbuf), 'libbpf_probe_bpf_map_type(ringbuf)'),
        ...(opts.iface ? { xdpNative: probeXdpNative(opts.iface) } : {}),
      },
      ...(opts.iface ? { iface: opts.iface } : {}),
      probedAt: new Date().toISOString(),
    };
  } finally {
    btf.vmlinux?.free();
  }
}
