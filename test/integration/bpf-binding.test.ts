import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BpfError,
  BpfLink,
  BpfMap,
  BpfObject,
  numPossibleCpus,
  tcClsactAttach,
  tcClsactDetach,
  xdpAttachLegacy,
  xdpDetachLegacy,
} from '../../controller/bpf/libbpf.js';
import { repoRoot } from '../support/build.js';

/*
 * The libbpf binding against the real kernel. Attach tests use a veth pair in the test's own
 * namespace; this process enters it with setns for those calls only (links and ifindexes are
 * per namespace, BPF objects and pins are global).
 */
const NS = 'twbb';
const pinRoot = `/sys/fs/bpf/twbb-${process.pid}`;
let dir: string;
let fixture: string;
let rejected: string;

function compile(src: string, out: string) {
  execFileSync('clang', ['-O2', '-g', '-target', 'bpf', `-I/usr/include/${os.machine()}-linux-gnu`, '-c', src, '-o', out]);
}
const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { encoding: 'utf8' });

/** Runs fn with this thread in the test namespace; the binding's calls are synchronous. */
async function inNetns<T>(fn: () => T): Promise<T> {
  const { enterNetns } = await import('../support/setns.js');
  const leave = enterNetns(`/run/netns/${NS}`);
  try {
    return fn();
  } finally {
    leave();
  }
}
const ifindex = (name: string) =>
  Number(sh(`ip -n ${NS} -j link show ${name} | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["ifindex"])'`).trim());

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'twill-bb-'));
  fixture = path.join(dir, 'fixture.bpf.o');
  rejected = path.join(dir, 'rejected.bpf.o');
  compile(path.join(repoRoot, 'test/fixtures/bpf/fixture.bpf.c'), fixture);
  compile(path.join(repoRoot, 'test/fixtures/bpf/rejected.bpf.c'), rejected);
  sh(
    `ip netns del ${NS} 2>/dev/null; ip netns add ${NS} && ip -n ${NS} link add bb0 type veth peer name bb1 && ip -n ${NS} link set bb0 up && ip -n ${NS} link set bb1 up`,
  );
});

afterAll(() => {
  sh(`ip netns del ${NS} 2>/dev/null || true`);
  rmSync(pinRoot, { recursive: true, force: true });
  rmSync(dir, { recursive: true, force: true });
});

describe('objects and errors', () => {
  it('loads an object and finds its programs and maps by name', () => {
    // A pin root even here: the fixture's pinned map would otherwise land at the bpffs root.
    execFileSync('mkdir', ['-p', pinRoot]);
    const obj = BpfObject.open(fixture, { pinRootPath: pinRoot });
    try {
      obj.load();
      expect(
        obj
          .programs()
          .map((p) => p.name)
          .sort(),
      ).toEqual(['fixture_tc_a', 'fixture_tc_b', 'fixture_xdp']);
      expect(obj.program('fixture_xdp').fd).toBeGreaterThan(0);
      expect(obj.map('fixture_hash').info()).toMatchObject({ keySize: 4, valueSize: 8, maxEntries: 4096, type: 1 });
      expect(() => obj.program('nope')).toThrow(/no BPF program named nope/);
    } finally {
      obj.close();
    }
  });

  it('reports a verifier rejection with the verifier log', () => {
    const obj = BpfObject.open(rejected);
    try {
      let err: unknown;
      try {
        obj.load();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BpfError);
      const e = err as BpfError;
      expect(e.fn).toBe('bpf_object__load');
      expect(e.message).toMatch(/bpf_object__load\(.*rejected\.bpf\.o\) failed: Permission denied \(errno 13\)/);
      expect(e.verifierLog).toMatch(/invalid access to packet/);
    } finally {
      obj.close();
    }
  });

  it('names the path and errno text when a pin is missing', () => {
    expect(() => BpfMap.fromPin(`${pinRoot}/absent`)).toThrow(/bpf_obj_get\(.*absent\) failed: No such file or directory \(errno 2\)/);
  });
});

describe('maps', () => {
  let obj: BpfObject;
  beforeAll(() => {
    obj = BpfObject.open(fixture, { pinRootPath: pinRoot });
    execFileSync('mkdir', ['-p', pinRoot]);
    obj.load();
  });
  afterAll(() => obj.close());

  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    return b;
  };
  const u64 = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    return b;
  };

  it('updates, looks up and deletes single entries', () => {
    const m = obj.map('fixture_hash');
    m.update(u32(7), u64(700));
    expect(m.lookup(u32(7))!.readBigUInt64LE(0)).toBe(700n);
    expect(() => m.update(u32(7), u64(1), 'noexist')).toThrow(/bpf_map_update_elem\(map fixture_hash\) failed: File exists/);
    expect(m.delete(u32(7))).toBe(true);
    expect(m.delete(u32(7))).toBe(false);
    expect(m.lookup(u32(7))).toBeUndefined();
    expect(() => m.lookup(Buffer.alloc(3))).toThrow(/key is 3 bytes, the map's keys are 4/);
  });

  it('writes, reads and deletes 1000 entries in batches', () => {
    const m = obj.map('fixture_hash');
    const keys = Array.from({ length: 1000 }, (_, i) => u32(i));
    m.updateBatch(
      keys,
      keys.map((_, i) => u64(i * 3)),
    );
    const entries = m.entries();
    expect(entries).toHaveLength(1000);
    expect(entries.every(([k, v]) => v.readBigUInt64LE(0) === BigInt(k.readUInt32LE(0) * 3))).toBe(true);
    expect(m.keys()).toHaveLength(1000);
    m.deleteBatch(keys.slice(0, 600));
    expect(m.keys()).toHaveLength(400);
    // Keys already gone do not stop the rest of a batch.
    m.deleteBatch(keys.slice(500, 1000));
    expect(m.keys()).toHaveLength(0);
  });

  it('sizes per-CPU values for every possible CPU', () => {
    const m = obj.map('fixture_percpu');
    expect(m.isPerCpu).toBe(true);
    expect(m.valueBufferSize).toBe(8 * numPossibleCpus());
    expect(m.lookup(u32(0))!.length).toBe(8 * numPossibleCpus());
  });

  it('reuses a map pinned by name when the object is opened again', () => {
    obj.map('fixture_pinned').update(u32(0), u64(42));
    const again = BpfObject.open(fixture, { pinRootPath: pinRoot });
    try {
      again.load();
      expect(again.map('fixture_pinned').lookup(u32(0))!.readBigUInt64LE(0)).toBe(42n);
      expect(BpfMap.fromPin(`${pinRoot}/fixture_pinned`).info().id).toBe(again.map('fixture_pinned').info().id);
    } finally {
      again.close();
    }
  });
});

describe('links and attach points', () => {
  let obj: BpfObject;
  beforeAll(() => {
    obj = BpfObject.open(fixture, { pinRootPath: pinRoot });
    obj.load();
  });
  afterAll(() => obj.close());

  it('attaches tcx, keeps it through a pin after the fd closes, swaps programs atomically, detaches', async () => {
    const idx = ifindex('bb0');
    const pin = `${pinRoot}/tcx-link`;
    await inNetns(() => {
      const link = BpfLink.attachTcx(obj.program('fixture_tc_a'), idx, 'ingress');
      link.pin(pin);
      link.close();
    });
    expect(sh(`bpftool link show pinned ${pin}`)).toMatch(/type 11|tcx/);
    const link = BpfLink.fromPin(pin);
    const before = link.info();
    expect(before).toMatchObject({ type: 11, ifindex: idx });
    link.update(obj.program('fixture_tc_b'));
    const after = link.info();
    expect(after.id).toBe(before.id);
    expect(after.progId).not.toBe(before.progId);
    link.detach();
    expect(link.info().ifindex).toBe(0);
    link.close();
    rmSync(pin);
  });

  it('attaches an XDP link in driver mode on a veth', async () => {
    const idx = ifindex('bb1');
    await inNetns(() => {
      const link = BpfLink.attachXdp(obj.program('fixture_xdp'), idx);
      expect(sh(`ip -n ${NS} -d link show bb1`)).toMatch(/prog\/xdp id/);
      link.detach();
      link.close();
    });
    expect(sh(`ip -n ${NS} -d link show bb1`)).not.toMatch(/prog\/xdp/);
  });

  it('falls back to clsact and legacy XDP attachments, and removes them', async () => {
    const idx = ifindex('bb0');
    await inNetns(() => {
      tcClsactAttach(obj.program('fixture_tc_a'), idx, 'egress', { handle: 1, priority: 1 });
      tcClsactAttach(obj.program('fixture_tc_b'), idx, 'egress', { handle: 1, priority: 1 }); // replace
      xdpAttachLegacy(obj.program('fixture_xdp'), idx, 'generic');
    });
    expect(sh(`tc -n ${NS} filter show dev bb0 egress`)).toMatch(/fixture_tc_b/);
    expect(sh(`ip -n ${NS} -d link show bb0`)).toMatch(/xdpgeneric/);
    await inNetns(() => {
      tcClsactDetach(idx, 'egress', { handle: 1, priority: 1 });
      xdpDetachLegacy(idx, 'generic');
    });
    expect(sh(`tc -n ${NS} filter show dev bb0 egress`)).not.toMatch(/fixture_tc/);
    expect(sh(`ip -n ${NS} -d link show bb0`)).not.toMatch(/xdpgeneric/);
  });
});
