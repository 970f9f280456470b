import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfError, BpfLink, BpfMap, BpfObject, ifNameToIndex, numPossibleCpus, probeTcx, setLibbpfLogger } from '../../controller/bpf/libbpf.js';
import { repoRoot } from '../support/build.js';

/*
 * The libbpf binding against the real kernel. BPF objects and pins are global; ifindexes and
 * attachments are per network namespace, so every attach runs in a child node process entered
 * into the test namespace with nsenter (ip netns exec would hide /sys/fs/bpf). The child imports
 * the binding compiled by tsc into the temp dir, so attachments are made by a process that then
 * exits: what survives is what the pins keep.
 */
const NS_A = `twa-lb${process.pid}-a`;
const NS_B = `twa-lb${process.pid}-b`;
const pinRoot = `/sys/fs/bpf/twa-test-lb${process.pid}`;
const ADDR_A = '10.251.0.1';
const ADDR_B = '10.251.0.2';
let tmp: string;
let objPath: string;
let childLib: string;

const sh = (argv: string[]) => execFileSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
/** For cleanup: runs argv and ignores a failure (e.g. a namespace that does not exist). */
const tryRun = (argv: string[]) => {
  try {
    execFileSync(argv[0], argv.slice(1), { stdio: 'ignore' });
  } catch {
    // nothing to undo
  }
};

function compileBpf(name: string): string {
  const out = path.join(tmp, name.replace(/\.c$/, '.o'));
  sh(['clang', '-O2', '-g', '-target', 'bpf', `-I/usr/include/${os.machine()}-linux-gnu`, '-c', path.join(repoRoot, 'test/fixtures/bpf', name), '-o', out]);
  return out;
}

/** Runs `body` (an async function body, `b` = the binding) in a node process inside NS_A; returns its JSON result. */
function inNsA<T = unknown>(body: string): T {
  const script = `import * as b from ${JSON.stringify(childLib)};
const objPath = ${JSON.stringify(objPath)}, pinRoot = ${JSON.stringify(pinRoot)};
const out = await (async () => { ${body} })();
process.stdout.write(JSON.stringify(out ?? null));`;
  const stdout = execFileSync('nsenter', [`--net=/run/netns/${NS_A}`, '--', process.execPath, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    cwd: tmp,
    env: { ...process.env, TWILL_LOG: 'error' },
  });
  return JSON.parse(stdout) as T;
}

const ipJson = <T>(ns: string, args: string[]) => JSON.parse(sh(['ip', '-n', ns, '-j', ...args])) as T;
const ifindexIn = (ns: string, dev: string) => ipJson<Array<{ ifindex: number }>>(ns, ['link', 'show', 'dev', dev])[0].ifindex;
const progName = (id: number) => (JSON.parse(sh(['bpftool', '-j', 'prog', 'show', 'id', String(id)])) as { name: string }).name;
/** Sends a few pings B -> A across the veth; the first may be lost to ARP, so no exit code check. */
const pingAFromB = () => tryRun(['nsenter', `--net=/run/netns/${NS_B}`, '--', 'ping', '-c', '3', '-i', '0.2', '-W', '1', ADDR_A]);
const pinnedCounter = () => {
  const m = BpfMap.fromPin(`${pinRoot}/lt_pinned`);
  try {
    return m.lookup(Buffer.alloc(4))!.readBigUInt64LE(0);
  } finally {
    m.close();
  }
};
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

beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'twa-libbpf-'));
  objPath = compileBpf('libbpf-test.bpf.c');
  // The child processes import the binding as plain JS: compile just it (and its imports).
  symlinkSync(path.join(repoRoot, 'node_modules'), path.join(tmp, 'node_modules'));
  writeFileSync(path.join(tmp, 'package.json'), '{"type":"module"}\n');
  execFileSync(
    'npx',
    [
      'tsc',
      '--outDir',
      path.join(tmp, 'js'),
      '--rootDir',
      repoRoot,
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--target',
      'ES2022',
      '--skipLibCheck',
      '--types',
      'node',
      path.join(repoRoot, 'controller/bpf/libbpf.ts'),
    ],
    { cwd: repoRoot, stdio: 'ignore' },
  );
  childLib = path.join(tmp, 'js/controller/bpf/libbpf.js');
  symlinkSync(path.join(repoRoot, 'node_modules'), path.join(tmp, 'js/node_modules'));
  writeFileSync(path.join(tmp, 'js/package.json'), '{"type":"module"}\n');

  for (const ns of [NS_A, NS_B]) tryRun(['ip', 'netns', 'del', ns]);
  for (const argv of [
    ['ip', 'netns', 'add', NS_A],
    ['ip', 'netns', 'add', NS_B],
    ['ip', '-n', NS_A, 'link', 'add', 'va', 'type', 'veth', 'peer', 'name', 'vb', 'netns', NS_B],
    ['ip', '-n', NS_A, 'addr', 'add', `${ADDR_A}/30`, 'dev', 'va'],
    ['ip', '-n', NS_B, 'addr', 'add', `${ADDR_B}/30`, 'dev', 'vb'],
    ['ip', '-n', NS_A, 'link', 'set', 'va', 'up'],
    ['ip', '-n', NS_B, 'link', 'set', 'vb', 'up'],
  ])
    sh(argv);
  mkdirSync(pinRoot, { recursive: true });
}, 120_000);

afterAll(() => {
  for (const ns of [NS_A, NS_B]) tryRun(['ip', 'netns', 'del', ns]);
  rmSync(pinRoot, { recursive: true, force: true });
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

describe('objects, programs and the libbpf log', () => {
  it('opens and loads an object and finds its programs and maps by name', () => {
    const obj = BpfObject.open(objPath, { pinRootPath: pinRoot, objectName: 'lt_named' });
    try {
      obj.load();
      expect(obj.name).toBe('lt_named');
      expect(
        obj
          .programs()
          .map((p) => p.name)
          .sort(),
      ).toEqual(['lt_tc_a', 'lt_tc_b', 'lt_xdp']);
      expect(obj.program('lt_xdp').fd).toBeGreaterThan(2);
      const maps = obj.maps();
      expect(maps.map((m) => m.name).sort()).toEqual(['lt_array', 'lt_hash', 'lt_lpm', 'lt_percpu', 'lt_pinned']);
      maps.forEach((m) => m.close());
      const hash = obj.map('lt_hash');
      expect(hash.info()).toMatchObject({ name: 'lt_hash', type: 1, keySize: 4, valueSize: 8, maxEntries: 4096, flags: 0 });
      expect(hash.info().id).toBeGreaterThan(0);
      expect(hash.info().btfId).toBeGreaterThan(0); // compiled with -g: the map carries BTF
      expect(hash.info().btfKeyTypeId).toBeGreaterThan(0);
      expect(hash.info().btfValueTypeId).toBeGreaterThan(0);
      expect(hash.isPerCpu).toBe(false);
      expect(hash.valueBufferSize).toBe(8);
      expect(() => obj.program('nope')).toThrow(/lt_named.*no BPF program named nope/);
      expect(() => obj.map('nomap')).toThrow(/lt_named.*no map named nomap/);
      // map handles own their fd: usable after the object is gone
      obj.close();
      hash.update(u32(1), u64(2));
      expect(hash.lookup(u32(1))!.readBigUInt64LE(0)).toBe(2n);
      hash.close();
      expect(() => hash.lookup(u32(1))).toThrow(/closed/);
      expect(() => obj.program('lt_xdp')).toThrow(/closed/);
    } finally {
      obj.close();
    }
  });

  it('throws BpfError with the verifier log when the verifier rejects a program, and logs through setLibbpfLogger', () => {
    const seen: Array<[string, string]> = [];
    setLibbpfLogger((level, msg) => seen.push([level, msg]));
    const obj = BpfObject.open(compileBpf('rejected.bpf.c'));
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
      expect(e.errno).toBe(13);
      expect(e.message).toMatch(/^bpf_object__load\(rejected from .*rejected\.bpf\.o\) failed: Permission denied \(errno 13\)/);
      // the failing instruction and the verifier's reason, in the log and in the message
      expect(e.verifierLog).toMatch(/\d+: \(71\) r\d = \*\(u8 \*\)\(r\d \+100\)/);
      expect(e.verifierLog).toMatch(/invalid access to packet, off=100/);
      expect(e.verifierLog).not.toMatch(/PROG LOAD LOG/);
      expect(e.message).toMatch(/invalid access to packet/);
      expect(seen.some(([level, msg]) => level === 'warn' && /BEGIN PROG LOAD LOG/.test(msg))).toBe(true);
      expect(seen.some(([level]) => level === 'debug')).toBe(true);
    } finally {
      obj.close();
      setLibbpfLogger(() => undefined);
    }
  });

  it('captures a verifier log longer than one print buffer, whole, and keeps 60 lines in the message', () => {
    const again = BpfObject.open(compileBpf('rejected-long.bpf.c'));
    try {
      again.load();
      expect.unreachable('the verifier accepted an unchecked packet read');
    } catch (err) {
      const e = err as BpfError;
      const lines = e.verifierLog!.split('\n');
      expect(e.verifierLog!.length).toBeGreaterThan(16_384);
      expect(lines[0]).toMatch(/^0: R1=ctx/); // the beginning survived
      expect(lines.some((l) => /^500: /.test(l))).toBe(true);
      expect(e.verifierLog).toMatch(/invalid access to packet[\s\S]*processed \d+ insns/);
      const shown = e.message.split('\n');
      expect(shown.length).toBe(2 + 60);
      expect(shown.at(-1)).toMatch(/processed \d+ insns/);
    } finally {
      again.close();
    }
  });

  it('names the function, the subject and the errno text in errors', () => {
    const check = (fn: () => unknown, re: RegExp, errno: number, name: string) => {
      let err: unknown;
      try {
        fn();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BpfError);
      expect((err as BpfError).fn).toBe(name);
      expect((err as BpfError).errno).toBe(errno);
      expect((err as BpfError).message).toMatch(re);
    };
    const missing = `${pinRoot}/does-not-exist`;
    check(() => BpfMap.fromPin(missing), new RegExp(`^bpf_obj_get\\(${missing}\\) failed: No such file or directory \\(errno 2\\)$`), 2, 'bpf_obj_get');
    check(() => BpfLink.fromPin(missing), /bpf_obj_get\(.*does-not-exist\) failed: No such file or directory/, 2, 'bpf_obj_get');
    check(
      () => BpfObject.open(`${tmp}/nope.bpf.o`),
      /bpf_object__open_file\(.*nope\.bpf\.o\) failed: No such file or directory \(errno 2\)/,
      2,
      'bpf_object__open_file',
    );
    check(() => ifNameToIndex('twa-nodev0'), /^if_nametoindex\(twa-nodev0\) failed: No such device \(errno 19\)$/, 19, 'if_nametoindex');
    // a pin of the wrong kind is refused, not misread
    const obj = BpfObject.open(objPath, { pinRootPath: pinRoot });
    try {
      obj.load();
      expect(() => BpfLink.fromPin(`${pinRoot}/lt_pinned`)).toThrow(/lt_pinned.*is a BPF map, not a link/);
    } finally {
      obj.close();
    }
  });

  it('knows this machine: possible CPUs, tcx, interfaces of the current namespace', () => {
    // /sys/devices/system/cpu/possible is "0-N" or a list of ranges
    const possible = readFileSync('/sys/devices/system/cpu/possible', 'utf8')
      .trim()
      .split(',')
      .reduce((n, r) => {
        const [a, b] = r.split('-').map(Number);
        return n + (b === undefined ? 1 : b - a + 1);
      }, 0);
    expect(numPossibleCpus()).toBe(possible);
    const [major, minor] = os.release().split('.').map(Number);
    expect(probeTcx()).toBe(major > 6 || (major === 6 && minor >= 6));
    expect(ifNameToIndex('lo')).toBe(1);
  });
});

// ---------------------------------------------------------------------------------------------

describe('maps', () => {
  let obj: BpfObject;
  beforeAll(() => {
    obj = BpfObject.open(objPath, { pinRootPath: pinRoot });
    obj.load();
  });
  afterAll(() => obj?.close());

  it('updates, looks up, deletes and lists keys, honouring update flags', () => {
    const m = obj.map('lt_hash');
    try {
      expect(m.lookup(u32(7))).toBeUndefined();
      m.update(u32(7), u64(70));
      m.update(u32(8), u64(80), 'noexist');
      expect(m.lookup(u32(7))!.readBigUInt64LE(0)).toBe(70n);
      expect(() => m.update(u32(8), u64(81), 'noexist')).toThrow(/^bpf_map_update_elem\(map lt_hash\) failed: File exists \(errno 17\)/);
      expect(() => m.update(u32(9), u64(90), 'exist')).toThrow(/No such file or directory \(errno 2\)/);
      m.update(u32(8), u64(88), 'exist');
      expect(m.lookup(u32(8))!.readBigUInt64LE(0)).toBe(88n);
      expect(
        m
          .keys()
          .map((k) => k.readUInt32LE(0))
          .sort(),
      ).toEqual([7, 8]);
      expect(m.delete(u32(7))).toBe(true);
      expect(m.delete(u32(7))).toBe(false);
      expect(m.keys().map((k) => k.readUInt32LE(0))).toEqual([8]);
      expect(() => m.lookup(Buffer.alloc(3))).toThrow(/key is 3 bytes, the map's keys are 4/);
      expect(() => m.update(u32(1), Buffer.alloc(4))).toThrow(/value is 4 bytes, expected 8/);
      m.delete(u32(8));
    } finally {
      m.close();
    }
  });

  it('batch-updates 1000 entries, reads them back, and batch-deletes some (absent keys included)', () => {
    const m = obj.map('lt_hash');
    try {
      const keys = Array.from({ length: 1000 }, (_, i) => u32(i + 1000));
      m.updateBatch(
        keys,
        keys.map((k) => u64(k.readUInt32LE(0) * 3)),
      );
      m.updateBatch([], []); // no-op
      expect(() => m.updateBatch([u32(1)], [])).toThrow(/1 keys but 0 values/);
      const got = new Map(m.entries().map(([k, v]) => [k.readUInt32LE(0), v.readBigUInt64LE(0)]));
      expect(got.size).toBe(1000);
      for (let i = 1000; i < 2000; i++) expect(got.get(i)).toBe(BigInt(i * 3));
      expect(m.keys()).toHaveLength(1000);

      // delete the first 600, with 5 keys that were never there mixed in
      m.deleteBatch([...keys.slice(0, 300), ...[1, 2, 3, 4, 5].map(u32), ...keys.slice(300, 600)]);
      m.deleteBatch([]);
      const left = m
        .entries()
        .map(([k]) => k.readUInt32LE(0))
        .sort((a, b) => a - b);
      expect(left).toEqual(Array.from({ length: 400 }, (_, i) => 1600 + i));
      m.deleteBatch(keys.slice(600));
      expect(m.entries()).toEqual([]);
    } finally {
      m.close();
    }
  });

  it('reads a PERCPU_ARRAY as one 8-byte slot per possible CPU', () => {
    const m = obj.map('lt_percpu');
    try {
      const n = numPossibleCpus();
      expect(m.isPerCpu).toBe(true);
      expect(m.info()).toMatchObject({ type: 6, valueSize: 4, maxEntries: 2 });
      expect(m.valueBufferSize).toBe(8 * n);
      const v = Buffer.alloc(8 * n);
      for (let cpu = 0; cpu < n; cpu++) v.writeUInt32LE(100 + cpu, cpu * 8);
      m.update(u32(1), v);
      const back = m.lookup(u32(1))!;
      expect(back).toHaveLength(8 * n);
      expect(Array.from({ length: n }, (_, cpu) => back.readUInt32LE(cpu * 8))).toEqual(Array.from({ length: n }, (_, cpu) => 100 + cpu));
      const all = m.entries();
      expect(all.map(([k]) => k.readUInt32LE(0))).toEqual([0, 1]);
      expect(all[1][1].equals(v)).toBe(true);
      expect(() => m.update(u32(0), Buffer.alloc(4))).toThrow(new RegExp(`value is 4 bytes, expected ${8 * n}`));
    } finally {
      m.close();
    }
  });

  it('falls back to per-key operations where a map type has no batch ops', () => {
    const lpm = obj.map('lt_lpm');
    const arr = obj.map('lt_array');
    try {
      const key = (len: number, a: number[]) => Buffer.from([len, 0, 0, 0, ...a]);
      const k1 = key(24, [10, 1, 2, 0]);
      const k2 = key(16, [10, 9, 0, 0]);
      lpm.update(k1, u32(1));
      lpm.update(k2, u32(2));
      expect(
        lpm
          .entries()
          .map(([k, v]) => [k.toString('hex'), v.readUInt32LE(0)])
          .sort(),
      ).toEqual(
        [
          [k2.toString('hex'), 2],
          [k1.toString('hex'), 1],
        ].sort(),
      );
      lpm.deleteBatch([k1, k2]); // no delete batch for LPM tries: one by one
      expect(lpm.entries()).toEqual([]);

      expect(arr.entries().map(([k]) => k.readUInt32LE(0))).toEqual([0, 1, 2, 3]);
      // array elements cannot be deleted at all: the per-key fallback reports exactly that
      let err: unknown;
      try {
        arr.deleteBatch([u32(0)]);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BpfError);
      expect((err as BpfError).fn).toBe('bpf_map_delete_elem');
      expect((err as BpfError).errno).toBe(22);
    } finally {
      lpm.close();
      arr.close();
    }
  });

  it('shares LIBBPF_PIN_BY_NAME maps between objects opened with the same pin root, and pins/unpins maps', () => {
    const first = obj.map('lt_pinned');
    first.update(u32(0), u64(4242));
    const firstId = first.info().id;
    first.close();

    const second = BpfObject.open(objPath, { pinRootPath: pinRoot });
    try {
      second.load();
      const reused = second.map('lt_pinned');
      expect(reused.info().id).toBe(firstId);
      expect(reused.lookup(u32(0))!.readBigUInt64LE(0)).toBe(4242n);
      reused.close();
      // a private (unpinned) map is not shared
      expect(second.map('lt_hash').info().id).not.toBe(obj.map('lt_hash').info().id);
    } finally {
      second.close();
    }
    const fromPin = BpfMap.fromPin(`${pinRoot}/lt_pinned`);
    expect(fromPin.name).toBe('lt_pinned');
    expect(fromPin.info().id).toBe(firstId);
    fromPin.close();

    // pin creates the parent directories, unpin removes the pin only
    const hash = obj.map('lt_hash');
    const pin = `${pinRoot}/deep/er/lt_hash`;
    hash.pin(pin);
    const viaPin = BpfMap.fromPin(pin);
    expect(viaPin.info().id).toBe(hash.info().id);
    viaPin.close();
    hash.unpin(pin);
    expect(existsSync(pin)).toBe(false);
    expect(() => hash.unpin(pin)).toThrow(/^unlink\(pin of map lt_hash at .*lt_hash\) failed: No such file or directory \(errno 2\)/);
    hash.close();
  });
});

// ---------------------------------------------------------------------------------------------

interface ChildLink {
  ifindex: number;
  info: { id: number; type: number; progId: number; ifindex?: number; attachType?: number };
}

describe('attach points (in a twa namespace, from a child process)', () => {
  let obj: BpfObject;
  beforeAll(() => {
    obj = BpfObject.open(objPath, { pinRootPath: pinRoot });
    obj.load();
  });
  afterAll(() => obj?.close());

  it('tcx: a pinned link outlives its process, then is found by pin, swapped atomically and detached', () => {
    const pin = `${pinRoot}/links/tcx-ingress`;
    const child = inNsA<ChildLink>(`
      const o = b.BpfObject.open(objPath, { pinRootPath: pinRoot });
      o.load();
      const ifindex = b.ifNameToIndex('va');
      const link = b.BpfLink.attachTcx(o.program('lt_tc_a'), ifindex, 'ingress');
      link.pin(pinRoot + '/links/tcx-ingress');
      const info = link.info();
      link.close();
      o.close();
      return { ifindex, info };`);
    // ifNameToIndex answered in the child's namespace
    expect(child.ifindex).toBe(ifindexIn(NS_A, 'va'));
    expect(child.info).toMatchObject({ type: 11, ifindex: child.ifindex, attachType: 46 });
    expect(progName(child.info.progId)).toBe('lt_tc_a');

    // the process is gone; the pinned link is still there and still attached
    expect(sh(['bpftool', 'link', 'show'])).toMatch(new RegExp(`^${child.info.id}: type 11\\s+prog ${child.info.progId}\\b`, 'm'));
    const before = pinnedCounter();
    pingAFromB();
    const afterA = pinnedCounter();
    expect(afterA).toBeGreaterThan(before); // lt_tc_a counts packets arriving on va

    const link = BpfLink.fromPin(pin);
    try {
      expect(link.info()).toEqual(child.info);
      link.update(obj.program('lt_tc_b'));
      const swapped = link.info();
      expect(swapped.id).toBe(child.info.id);
      expect(swapped.progId).not.toBe(child.info.progId);
      expect(progName(swapped.progId)).toBe('lt_tc_b');
      pingAFromB();
      expect(pinnedCounter()).toBe(afterA); // lt_tc_b counts nothing

      link.detach();
      expect(link.info().ifindex).toBe(0); // a detached tcx link has no device
      expect(() => link.update(obj.program('lt_tc_a'))).toThrow(/^bpf_link_update\(link pinned at .*tcx-ingress -> lt_tc_a\) failed: .*\(errno \d+\)/);
    } finally {
      link.close();
      rmSync(pin, { force: true });
    }
  });

  it('XDP link: driver mode on a veth, pinned, detached from another process', () => {
    const pin = `${pinRoot}/links/xdp`;
    const child = inNsA<ChildLink>(`
      const o = b.BpfObject.open(objPath, { pinRootPath: pinRoot });
      o.load();
      const ifindex = b.ifNameToIndex('va');
      const link = b.BpfLink.attachXdp(o.program('lt_xdp'), ifindex);
      link.pin(pinRoot + '/links/xdp');
      const info = link.info();
      link.close();
      o.close();
      return { ifindex, info };`);
    expect(child.info).toMatchObject({ type: 6, ifindex: ifindexIn(NS_A, 'va') });
    expect(child.info.attachType).toBeUndefined();
    type XdpLink = Array<{ xdp?: { mode: number; prog?: { id: number } } }>;
    const shown = ipJson<XdpLink>(NS_A, ['-d', 'link', 'show', 'dev', 'va'])[0];
    expect(shown.xdp?.mode).toBe(1); // XDP_ATTACHED_DRV
    expect(shown.xdp?.prog?.id).toBe(child.info.progId);

    const link = BpfLink.fromPin(pin);
    try {
      expect(link.info()).toEqual(child.info);
      link.detach();
      expect(ipJson<XdpLink>(NS_A, ['-d', 'link', 'show', 'dev', 'va'])[0].xdp).toBeUndefined();
    } finally {
      link.close();
      rmSync(pin, { force: true });
    }
  });

  it('legacy fallbacks: clsact filter attach/replace/detach and netlink XDP in native and generic mode', () => {
    const filters = () => sh(['tc', '-n', NS_A, 'filter', 'show', 'dev', 'va', 'egress']);
    const res = inNsA<{ afterA: string; afterB: string; afterDetach: string; native: unknown; generic: unknown; none: unknown }>(`
      const { execFileSync } = await import('node:child_process');
      const tc = () => execFileSync('tc', ['filter', 'show', 'dev', 'va', 'egress'], { encoding: 'utf8' });
      const xdp = () => JSON.parse(execFileSync('ip', ['-j', '-d', 'link', 'show', 'dev', 'va'], { encoding: 'utf8' }))[0].xdp ?? null;
      const o = b.BpfObject.open(objPath, { pinRootPath: pinRoot });
      o.load();
      const ifindex = b.ifNameToIndex('va');
      b.tcClsactAttach(o.program('lt_tc_a'), ifindex, 'egress', { handle: 1, priority: 1 });
      const afterA = tc();
      b.tcClsactAttach(o.program('lt_tc_b'), ifindex, 'egress', { handle: 1, priority: 1 });
      const afterB = tc();
      b.tcClsactDetach(ifindex, 'egress', { handle: 1, priority: 1 });
      b.tcClsactDetach(ifindex, 'egress', { handle: 1, priority: 1 }); // already gone: fine
      const afterDetach = tc();
      b.xdpAttachLegacy(o.program('lt_xdp'), ifindex, 'native');
      const native = xdp();
      b.xdpDetachLegacy(ifindex, 'native');
      b.xdpAttachLegacy(o.program('lt_xdp'), ifindex, 'generic');
      const generic = xdp();
      b.xdpDetachLegacy(ifindex, 'generic');
      const none = xdp();
      o.close();
      return { afterA, afterB, afterDetach, native, generic, none };`);
    expect(res.afterA).toMatch(/lt_tc_a.*direct-action/);
    expect(res.afterB).toMatch(/lt_tc_b.*direct-action/);
    expect(res.afterB).not.toMatch(/lt_tc_a/); // replaced, not added
    expect(res.afterDetach.trim()).toBe('');
    expect(filters().trim()).toBe('');
    expect(res.native).toMatchObject({ mode: 1 }); // XDP_ATTACHED_DRV
    expect(res.generic).toMatchObject({ mode: 2 }); // XDP_ATTACHED_SKB
    expect(res.none).toBeNull();
  });
});
