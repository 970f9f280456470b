import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BpfLink, ifNameToIndex, loadInstructions, xdpAttachLegacy, type LinkInfo } from '../../controller/bpf/libbpf.js';
import { attachDataplane, detachDataplane } from '../../controller/dataplane/attach.js';
import { parseDataplaneSpec, pinPaths } from '../../controller/dataplane/spec.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf } from '../support/build.js';
import { enterNetns } from '../support/setns.js';

/*
 * What attach refuses, against the real kernel: a pin where twill keeps a link that holds a link
 * of another type or direction (nothing may change), and an XDP hook another program holds
 * (the old code replaced it through netlink; now the error names the device and the program).
 * Namespaces ts-ar-n1/ts-ar-n2 joined by a veth on 192.168.121.0/24; pins under
 * /sys/fs/bpf/ts-ar-<pid>.
 */
const NS = 'ts-ar-n1';
const PEER_NS = 'ts-ar-n2';
const pinDir = `/sys/fs/bpf/ts-ar-${process.pid}`;
const paths = pinPaths(pinDir);
const PROG_TYPE = { sched_cls: 3, xdp: 6 } as const;

const spec = (decapHook: 'tc' | 'xdp') =>
  parseDataplaneSpec({
    pinDir,
    underlayIface: 'und0',
    publicIp: '192.168.121.1',
    vtepMac: '0a:12:11:00:00:01',
    subnet: '10.121.1.0/24',
    network: '10.121.0.0/16',
    decapHook,
  });

async function inNetns<T>(fn: () => Promise<T> | T): Promise<T> {
  const leave = enterNetns(`/run/netns/${NS}`);
  try {
    return await fn();
  } finally {
    leave();
  }
}

/** A program that returns `ret` at once (XDP_PASS, TC_ACT_OK): someone else's, as far as twill knows. */
const trivialProgram = (type: keyof typeof PROG_TYPE, ret: number) => {
  const insns = Buffer.alloc(16);
  insns.writeUInt8(0xb7, 0); // r0 = ret
  insns.writeInt32LE(ret, 4);
  insns.writeUInt8(0x95, 8); // exit
  return loadInstructions(PROG_TYPE[type], `ts_foreign_${type === 'xdp' ? 'xdp' : 'tc'}`, insns);
};

/** Attaches a foreign link to und0 and pins it at `pin`; the pin alone keeps it attached. */
function pinForeignLink(pin: string, kind: 'xdp' | 'tcx-egress'): LinkInfo {
  const prog = kind === 'xdp' ? trivialProgram('xdp', 2) : trivialProgram('sched_cls', 0);
  try {
    const ifindex = ifNameToIndex('und0');
    const link = kind === 'xdp' ? BpfLink.attachXdp(prog, ifindex) : BpfLink.attachTcx(prog, ifindex, 'egress');
    mkdirSync(path.dirname(pin), { recursive: true });
    link.pin(pin);
    const info = link.info();
    link.close();
    return info;
  } finally {
    prog.close();
  }
}

function linkAt(pin: string): LinkInfo {
  const link = BpfLink.fromPin(pin);
  try {
    return link.info();
  } finally {
    link.close();
  }
}

/** Every file under the pin directory, relative to it. */
function pinnedFiles(dir = pinDir): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .flatMap((name) => {
      const p = path.join(dir, name);
      return statSync(p).isDirectory() ? pinnedFiles(p) : [path.relative(pinDir, p)];
    })
    .sort();
}

const devices = async () =>
  (JSON.parse((await run(['ip', '-j', 'link', 'show'], { netns: NS })).stdout) as Array<{ ifname: string }>).map((l) => l.ifname).sort();
const xdpProgOn = async (dev: string) =>
  (JSON.parse((await run(['ip', '-j', '-d', 'link', 'show', 'dev', dev], { netns: NS })).stdout) as Array<{ xdp?: { prog?: { id: number } } }>)[0].xdp?.prog
    ?.id;

async function removeAll(): Promise<void> {
  if (existsSync(`/run/netns/${NS}`)) await inNetns(() => detachDataplane(pinDir)).catch(() => undefined);
  rmSync(pinDir, { recursive: true, force: true });
  rmSync(path.dirname(paths.attachState), { recursive: true, force: true });
  // A link whose last pin goes is released after an RCU grace period and a workqueue run (bpffs
  // frees the inode's reference from an RCU callback): the hook is free only once the kernel got
  // there, and the next test must not find it still held.
  if (existsSync(`/run/netns/${NS}`)) for (let i = 0; i < 200 && (await xdpProgOn('und0')) !== undefined; i++) await new Promise((r) => setTimeout(r, 25));
}

beforeAll(async () => {
  buildBpf();
  for (const ns of [NS, PEER_NS]) await run(['ip', 'netns', 'del', ns], { allowFailure: true });
  for (const ns of [NS, PEER_NS]) await run(['ip', 'netns', 'add', ns]);
  await run(['ip', 'link', 'add', 'und0', 'netns', NS, 'type', 'veth', 'peer', 'name', 'und0', 'netns', PEER_NS]);
  for (const [ns, addr] of [
    [NS, '192.168.121.1/24'],
    [PEER_NS, '192.168.121.2/24'],
  ]) {
    await run(['ip', 'addr', 'add', addr, 'dev', 'und0'], { netns: ns });
    await run(['ip', 'link', 'set', 'und0', 'up'], { netns: ns });
  }
}, 180_000);

afterEach(removeAll);

afterAll(async () => {
  await removeAll();
  for (const ns of [NS, PEER_NS]) await run(['ip', 'netns', 'del', ns], { allowFailure: true });
});

describe('a pinned link of the wrong type is refused, and nothing changes', () => {
  it.each([
    { pin: paths.encapLink, foreign: 'xdp' as const, expected: /links\/encap is a xdp link, not the tcx egress link twill keeps there: refusing to reuse it/ },
    { pin: paths.decapLink, foreign: 'tcx-egress' as const, expected: /links\/decap is a tcx egress link, not the tcx ingress link twill keeps there/ },
    { pin: path.join(paths.podLinks, 'pod0'), foreign: 'xdp' as const, expected: /links\/pods\/pod0 is a xdp link, not the tcx ingress link/ },
  ])('$foreign link at $pin', async ({ pin, foreign, expected }) => {
    const before = await inNetns(() => pinForeignLink(pin, foreign));
    const files = pinnedFiles();
    const devs = await devices();
    const xdp = await xdpProgOn('und0');
    expect(files).toEqual([path.relative(pinDir, pin)]);

    await expect(inNetns(() => attachDataplane({ spec: spec('tc') }))).rejects.toThrow(expected);

    expect(linkAt(pin)).toEqual(before); // same link, same program, same device
    expect(pinnedFiles()).toEqual(files); // no map, program or link pinned
    expect(await devices()).toEqual(devs); // no twill0, no twill-rx
    expect(await xdpProgOn('und0')).toBe(xdp);
    expect(existsSync(paths.attachState)).toBe(false);
  });
});

describe('XDP attach falls back only when the kernel or driver lacks a way of attaching', () => {
  it('an XDP hook held by another program is an error naming the device and program; the program stays', async () => {
    const foreign = trivialProgram('xdp', 2);
    try {
      await inNetns(() => xdpAttachLegacy(foreign, ifNameToIndex('und0'), 'native'));
      const held = await xdpProgOn('und0');
      expect(held).toBeGreaterThan(0);

      await expect(inNetns(() => attachDataplane({ spec: spec('xdp') }))).rejects.toThrow(
        /attaching twill_decap in XDP on und0 \(ifindex \d+\): bpf_link_create\(xdp twill_decap on ifindex \d+\) failed: Device or resource busy \(errno 16\)/,
      );
      expect(await xdpProgOn('und0')).toBe(held);
      expect(existsSync(paths.attachState)).toBe(false);
    } finally {
      foreign.close();
    }
  });
});
