import koffi from 'koffi';
import { release } from 'node:os';
import { logger } from '../util/log.js';

/*
 * Typed access to the system libbpf (libbpf.so.1, Debian's 1.1) through koffi. Raw calls and
 * untyped pointers stay in this file; everything exported is a typed wrapper whose errors name
 * the libbpf function, what it was called on, the errno text and, for loads, the verifier log.
 */

const lib = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

const OpenOpts = koffi.struct('twill_bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  removed_attach_prog_fd: 'uint32_t',
  kconfig: 'const char *',
  btf_custom_path: 'const char *',
  kernel_log_buf: 'void *',
  kernel_log_size: 'size_t',
  kernel_log_level: 'uint32_t',
});
const TcHook = koffi.struct('twill_bpf_tc_hook', { sz: 'size_t', ifindex: 'int', attach_point: 'int', parent: 'uint32_t' });
const TcOpts = koffi.struct('twill_bpf_tc_opts', { sz: 'size_t', prog_fd: 'int', flags: 'uint32_t', prog_id: 'uint32_t', handle: 'uint32_t', priority: 'uint32_t' });
const BatchOpts = koffi.struct('twill_bpf_map_batch_opts', { sz: 'size_t', elem_flags: 'uint64_t', flags: 'uint64_t' });
const PrintFn = koffi.proto('int twill_libbpf_print_fn(int level, void *fmt, void *args)');

const raw = {
  open: lib.func('void *bpf_object__open_file(const char *path, const twill_bpf_object_open_opts *opts)'),
  load: lib.func('int bpf_object__load(void *obj)'),
  close: lib.func('void bpf_object__close(void *obj)'),
  findProgram: lib.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
  nextProgram: lib.func('void *bpf_object__next_program(void *obj, void *prev)'),
  programName: lib.func('const char *bpf_program__name(void *prog)'),
  programFd: lib.func('int bpf_program__fd(void *prog)'),
  findMap: lib.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
  nextMap: lib.func('void *bpf_object__next_map(void *obj, void *prev)'),
  mapName: lib.func('const char *bpf_map__name(void *map)'),
  mapFd: lib.func('int bpf_map__fd(void *map)'),
  objGet: lib.func('int bpf_obj_get(const char *path)'),
  objPin: lib.func('int bpf_obj_pin(int fd, const char *path)'),
  infoByFd: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)'),
  lookup: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  update: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  delete: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  nextKey: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next)'),
  updateBatch: lib.func('int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const twill_bpf_map_batch_opts *opts)'),
  deleteBatch: lib.func('int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const twill_bpf_map_batch_opts *opts)'),
  lookupBatch: lib.func('int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const twill_bpf_map_batch_opts *opts)'),
  linkCreate: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, void *opts)'),
  linkUpdate: lib.func('int bpf_link_update(int link_fd, int new_prog_fd, void *opts)'),
  linkDetach: lib.func('int bpf_link_detach(int link_fd)'),
  tcHookCreate: lib.func('int bpf_tc_hook_create(twill_bpf_tc_hook *hook)'),
  tcAttach: lib.func('int bpf_tc_attach(const twill_bpf_tc_hook *hook, _Inout_ twill_bpf_tc_opts *opts)'),
  tcDetach: lib.func('int bpf_tc_detach(const twill_bpf_tc_hook *hook, const twill_bpf_tc_opts *opts)'),
  xdpAttach: lib.func('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, void *opts)'),
  xdpDetach: lib.func('int bpf_xdp_detach(int ifindex, uint32_t flags, void *opts)'),
  numCpus: lib.func('int libbpf_num_possible_cpus(void)'),
  setPrint: lib.func('void *libbpf_set_print(twill_libbpf_print_fn *fn)'),
  strerror: libc.func('const char *strerror(int errnum)'),
  close_fd: libc.func('int close(int fd)'),
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *name)'),
  vsnprintf: libc.func('int vsnprintf(void *buf, size_t size, void *fmt, void *ap)'),
};

// ---------------------------------------------------------------------------------------------
// errors and the libbpf log

export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    readonly fn: string,
    readonly errno: number,
    context: string,
    readonly verifierLog?: string,
  ) {
    super(`${fn}(${context}) failed: ${raw.strerror(errno) as string} (errno ${errno})` + (verifierLog ? `\nverifier log (tail):\n${verifierLog}` : ''));
  }
}

/** libbpf returns -errno from int functions (1.x semantics) and sets errno for pointer ones. */
function check(rc: number, fn: string, context: string): number {
  if (rc < 0) throw new BpfError(fn, -rc, context);
  return rc;
}

type LogLevel = 'warn' | 'info' | 'debug';
const libbpfLog = logger('libbpf');
let userLogger: (level: LogLevel, msg: string) => void = (level, msg) => {
  if (level === 'warn') libbpfLog.warn(msg);
};
/** Lines libbpf prints during a load, kept so a failed load can report its verifier log. */
let capture: string[] | undefined;

const printBuf = Buffer.alloc(8192);
const printCallback = koffi.register((level: number, fmt: unknown, args: unknown) => {
  const n = raw.vsnprintf(printBuf, printBuf.length, fmt, args) as number;
  const text = printBuf.toString('utf8', 0, Math.max(0, Math.min(n, printBuf.length - 1))).replace(/\n$/, '');
  capture?.push(text);
  userLogger(level === 0 ? 'warn' : level === 1 ? 'info' : 'debug', text);
  return 0;
}, koffi.pointer(PrintFn));
raw.setPrint(printCallback);

export function setLibbpfLogger(fn: (level: LogLevel, msg: string) => void): void {
  userLogger = fn;
}

// ---------------------------------------------------------------------------------------------
// objects and programs

export interface OpenOptions {
  pinRootPath?: string;
  objectName?: string;
}

export class BpfProgram {
  constructor(
    readonly name: string,
    private readonly handle: unknown,
  ) {}
  get fd(): number {
    return raw.programFd(this.handle) as number;
  }
  pin(path: string): void {
    check(raw.objPin(this.fd, path) as number, 'bpf_obj_pin', `program ${this.name} at ${path}`);
  }
}

export class BpfObject {
  private closed = false;
  private constructor(
    readonly path: string,
    private readonly handle: unknown,
  ) {}

  static open(path: string, opts: OpenOptions = {}): BpfObject {
    const o = {
      sz: koffi.sizeof(OpenOpts),
      object_name: opts.objectName ?? null,
      relaxed_maps: false,
      pin_root_path: opts.pinRootPath ?? null,
      removed_attach_prog_fd: 0,
      kconfig: null,
      btf_custom_path: null,
      kernel_log_buf: null,
      kernel_log_size: 0,
      kernel_log_level: 0,
    };
    const h = raw.open(path, o);
    if (!h) throw new BpfError('bpf_object__open_file', koffi.errno(), path);
    return new BpfObject(path, h);
  }

  load(): void {
    capture = [];
    try {
      const rc = raw.load(this.handle) as number;
      if (rc < 0) {
        const tail = capture.join('\n').split('\n').slice(-60).join('\n');
        throw new BpfError('bpf_object__load', -rc, this.path, tail || undefined);
      }
    } finally {
      capture = undefined;
    }
  }

  program(name: string): BpfProgram {
    const p = raw.findProgram(this.handle, name);
    if (!p) throw new Error(`${this.path}: no BPF program named ${name}`);
    return new BpfProgram(name, p);
  }

  programs(): BpfProgram[] {
    const out: BpfProgram[] = [];
    for (let p = raw.nextProgram(this.handle, null); p; p = raw.nextProgram(this.handle, p)) out.push(new BpfProgram(raw.programName(p) as string, p));
    return out;
  }

  /** A handle on one of the object's maps; valid until close() (fromPin gives an independent one). */
  map(name: string): BpfMap {
    const m = raw.findMap(this.handle, name);
    if (!m) throw new Error(`${this.path}: no map named ${name}`);
    return new BpfMap(name, raw.mapFd(m) as number, false);
  }

  maps(): BpfMap[] {
    const out: BpfMap[] = [];
    for (let m = raw.nextMap(this.handle, null); m; m = raw.nextMap(this.handle, m)) out.push(new BpfMap(raw.mapName(m) as string, raw.mapFd(m) as number, false));
    return out;
  }

  /** Pinned maps and links survive; the object's own fds go. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    raw.close(this.handle);
  }
}

// ---------------------------------------------------------------------------------------------
// maps

export interface MapInfo {
  id: number;
  type: number;
  name: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  btfId: number;
  btfKeyTypeId: number;
  btfValueTypeId: number;
}

const PERCPU_TYPES = new Set([5 /* PERCPU_HASH */, 6 /* PERCPU_ARRAY */, 10 /* LRU_PERCPU_HASH */]);
const ARRAY_TYPES = new Set([2, 6]);
const updateFlags = { any: 0, noexist: 1, exist: 2 } as const;
const ENOENT = 2;
const EINVAL = 22;
const ENOTSUPP = 524;
const EOPNOTSUPP = 95;

function getInfo(fd: number, size: number, what: string): Buffer {
  const buf = Buffer.alloc(size);
  const len = [size];
  check(raw.infoByFd(fd, buf, len) as number, 'bpf_obj_get_info_by_fd', what);
  return buf;
}

export class BpfMap {
  private cachedInfo?: MapInfo;

  constructor(
    readonly name: string,
    readonly fd: number,
    private readonly ownsFd: boolean,
  ) {}

  static fromPin(path: string): BpfMap {
    const fd = check(raw.objGet(path) as number, 'bpf_obj_get', path);
    const m = new BpfMap(path, fd, true);
    return new BpfMap(m.info().name || path, fd, true);
  }

  info(): MapInfo {
    if (!this.cachedInfo) {
      const b = getInfo(this.fd, 88, `map ${this.name}`);
      this.cachedInfo = {
        type: b.readUInt32LE(0),
        id: b.readUInt32LE(4),
        keySize: b.readUInt32LE(8),
        valueSize: b.readUInt32LE(12),
        maxEntries: b.readUInt32LE(16),
        flags: b.readUInt32LE(20),
        name: b.toString('utf8', 24, 40).replace(/\0.*$/s, ''),
        btfId: b.readUInt32LE(64),
        btfKeyTypeId: b.readUInt32LE(68),
        btfValueTypeId: b.readUInt32LE(72),
      };
    }
    return this.cachedInfo;
  }

  get isPerCpu(): boolean {
    return PERCPU_TYPES.has(this.info().type);
  }

  get valueBufferSize(): number {
    const { valueSize } = this.info();
    return this.isPerCpu ? Math.ceil(valueSize / 8) * 8 * numPossibleCpus() : valueSize;
  }

  private checkKey(key: Buffer): void {
    if (key.length !== this.info().keySize) throw new Error(`map ${this.name}: key is ${key.length} bytes, the map's keys are ${this.info().keySize}`);
  }

  lookup(key: Buffer): Buffer | undefined {
    this.checkKey(key);
    const value = Buffer.alloc(this.valueBufferSize);
    const rc = raw.lookup(this.fd, key, value) as number;
    if (rc === -ENOENT) return undefined;
    check(rc, 'bpf_map_lookup_elem', `map ${this.name}`);
    return value;
  }

  update(key: Buffer, value: Buffer, flags: keyof typeof updateFlags = 'any'): void {
    this.checkKey(key);
    if (value.length !== this.valueBufferSize) throw new Error(`map ${this.name}: value is ${value.length} bytes, expected ${this.valueBufferSize}`);
    check(raw.update(this.fd, key, value, updateFlags[flags]) as number, 'bpf_map_update_elem', `map ${this.name}`);
  }

  delete(key: Buffer): boolean {
    this.checkKey(key);
    const rc = raw.delete(this.fd, key) as number;
    if (rc === -ENOENT) return false;
    check(rc, 'bpf_map_delete_elem', `map ${this.name}`);
    return true;
  }

  keys(): Buffer[] {
    const size = this.info().keySize;
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(size);
      const rc = raw.nextKey(this.fd, prev, next) as number;
      if (rc === -ENOENT) return out;
      check(rc, 'bpf_map_get_next_key', `map ${this.name}`);
      out.push(next);
      prev = next;
    }
  }

  entries(): Array<[Buffer, Buffer]> {
    const { keySize, maxEntries, type } = this.info();
    if (!ARRAY_TYPES.has(type)) {
      try {
        return this.lookupBatchAll(keySize, Math.min(maxEntries, 4096));
      } catch (err) {
        if (!(err instanceof BpfError) || ![EINVAL, ENOTSUPP, EOPNOTSUPP].includes(err.errno)) throw err;
      }
    }
    const out: Array<[Buffer, Buffer]> = [];
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) out.push([k, v]); // deleted between the two calls: skip
    }
    return out;
  }

  private lookupBatchAll(keySize: number, chunk: number): Array<[Buffer, Buffer]> {
    const vsize = this.valueBufferSize;
    const out: Array<[Buffer, Buffer]> = [];
    const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
    const tokenA = Buffer.alloc(Math.max(keySize, 8));
    const tokenB = Buffer.alloc(Math.max(keySize, 8));
    let inBatch: Buffer | null = null;
    let outBatch = tokenA;
    for (;;) {
      const keys = Buffer.alloc(keySize * chunk);
      const values = Buffer.alloc(vsize * chunk);
      const count = [chunk];
      const rc = raw.lookupBatch(this.fd, inBatch, outBatch, keys, values, count, opts) as number;
      if (rc < 0 && rc !== -ENOENT) check(rc, 'bpf_map_lookup_batch', `map ${this.name}`);
      for (let i = 0; i < count[0]; i++)
        out.push([Buffer.from(keys.subarray(i * keySize, (i + 1) * keySize)), Buffer.from(values.subarray(i * vsize, (i + 1) * vsize))]);
      if (rc === -ENOENT) return out;
      inBatch = outBatch;
      outBatch = outBatch === tokenA ? tokenB : tokenA;
    }
  }

  updateBatch(keys: Buffer[], values: Buffer[]): void {
    if (keys.length !== values.length) throw new Error(`map ${this.name}: ${keys.length} keys but ${values.length} values`);
    if (keys.length === 0) return;
    keys.forEach((k) => this.checkKey(k));
    const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
    const count = [keys.length];
    const rc = raw.updateBatch(this.fd, Buffer.concat(keys), Buffer.concat(values), count, opts) as number;
    check(rc, 'bpf_map_update_batch', `map ${this.name}, ${keys.length} entries, ${count[0]} applied`);
  }

  deleteBatch(keys: Buffer[]): void {
    if (keys.length === 0) return;
    keys.forEach((k) => this.checkKey(k));
    if (!ARRAY_TYPES.has(this.info().type)) {
      const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
      const count = [keys.length];
      const rc = raw.deleteBatch(this.fd, Buffer.concat(keys), count, opts) as number;
      if (rc >= 0) return;
      // A key that is already gone fails the batch at that key: finish one by one.
      if (rc !== -ENOENT && rc !== -EINVAL && rc !== -ENOTSUPP) check(rc, 'bpf_map_delete_batch', `map ${this.name}`);
      keys = keys.slice(count[0]);
    }
    for (const k of keys) this.delete(k);
  }

  pin(path: string): void {
    check(raw.objPin(this.fd, path) as number, 'bpf_obj_pin', `map ${this.name} at ${path}`);
  }

  close(): void {
    if (this.ownsFd) raw.close_fd(this.fd);
  }
}

// ---------------------------------------------------------------------------------------------
// links and attach points

export type TcxDirection = 'ingress' | 'egress';
export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  ifindex?: number;
}

const BPF_XDP = 37;
const BPF_TCX = { ingress: 46, egress: 47 } as const;
const LINK_TYPE_XDP = 6;
const LINK_TYPE_TCX = 11;

export class BpfLink {
  private constructor(
    readonly fd: number,
    private readonly what: string,
  ) {}

  static fromPin(path: string): BpfLink {
    return new BpfLink(check(raw.objGet(path) as number, 'bpf_obj_get', path), path);
  }

  /** An XDP link: the kernel picks driver mode where the device has it (veth, virtio_net, most NICs). */
  static attachXdp(prog: BpfProgram, ifindex: number): BpfLink {
    const what = `xdp ${prog.name} on ifindex ${ifindex}`;
    return new BpfLink(check(raw.linkCreate(prog.fd, ifindex, BPF_XDP, null) as number, 'bpf_link_create', what), what);
  }

  static attachTcx(prog: BpfProgram, ifindex: number, dir: TcxDirection): BpfLink {
    const what = `tcx ${dir} ${prog.name} on ifindex ${ifindex}`;
    return new BpfLink(check(raw.linkCreate(prog.fd, ifindex, BPF_TCX[dir], null) as number, 'bpf_link_create', what), what);
  }

  pin(path: string): void {
    check(raw.objPin(this.fd, path) as number, 'bpf_obj_pin', `link ${this.what} at ${path}`);
  }

  /** Atomic: packets see either the old program or the new one, never none. */
  update(prog: BpfProgram): void {
    check(raw.linkUpdate(this.fd, prog.fd, null) as number, 'bpf_link_update', `${this.what} -> ${prog.name}`);
  }

  info(): LinkInfo {
    const b = getInfo(this.fd, 256, `link ${this.what}`);
    const type = b.readUInt32LE(0);
    // xdp and tcx both start their union member with the ifindex (the union is 8-byte aligned, at 16).
    const ifindex = type === LINK_TYPE_XDP || type === LINK_TYPE_TCX ? b.readUInt32LE(16) : undefined;
    return { type, id: b.readUInt32LE(4), progId: b.readUInt32LE(8), ifindex };
  }

  detach(): void {
    check(raw.linkDetach(this.fd) as number, 'bpf_link_detach', this.what);
  }

  close(): void {
    raw.close_fd(this.fd);
  }
}

const TC_POINT = { ingress: 1, egress: 2 } as const;
const BPF_TC_F_REPLACE = 1;

function tcHook(ifindex: number, dir: TcxDirection) {
  return { sz: koffi.sizeof(TcHook), ifindex, attach_point: TC_POINT[dir], parent: 0 };
}

/** clsact + a direct-action filter, for kernels without tcx; replacing the filter is the atomic swap. */
export function tcClsactAttach(prog: BpfProgram, ifindex: number, dir: TcxDirection, opts: { handle?: number; priority?: number } = {}): void {
  const hook = tcHook(ifindex, dir);
  const rc = raw.tcHookCreate(hook) as number;
  if (rc < 0 && rc !== -17 /* EEXIST */) check(rc, 'bpf_tc_hook_create', `clsact on ifindex ${ifindex}`);
  const o = { sz: koffi.sizeof(TcOpts), prog_fd: prog.fd, flags: BPF_TC_F_REPLACE, prog_id: 0, handle: opts.handle ?? 1, priority: opts.priority ?? 1 };
  check(raw.tcAttach(hook, o) as number, 'bpf_tc_attach', `${dir} ${prog.name} on ifindex ${ifindex}`);
}

export function tcClsactDetach(ifindex: number, dir: TcxDirection, opts: { handle?: number; priority?: number } = {}): void {
  const o = { sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, handle: opts.handle ?? 1, priority: opts.priority ?? 1 };
  const rc = raw.tcDetach(tcHook(ifindex, dir), o) as number;
  if (rc < 0 && rc !== -ENOENT) check(rc, 'bpf_tc_detach', `${dir} on ifindex ${ifindex}`);
}

const XDP_MODE = { native: 4 /* XDP_FLAGS_DRV_MODE */, generic: 2 /* XDP_FLAGS_SKB_MODE */ } as const;

export function xdpAttachLegacy(prog: BpfProgram, ifindex: number, mode: keyof typeof XDP_MODE): void {
  check(raw.xdpAttach(ifindex, prog.fd, XDP_MODE[mode], null) as number, 'bpf_xdp_attach', `${mode} ${prog.name} on ifindex ${ifindex}`);
}

export function xdpDetachLegacy(ifindex: number, mode: keyof typeof XDP_MODE): void {
  check(raw.xdpDetach(ifindex, XDP_MODE[mode], null) as number, 'bpf_xdp_detach', `${mode} on ifindex ${ifindex}`);
}

// ---------------------------------------------------------------------------------------------
// small facts

export function ifNameToIndex(name: string): number {
  const idx = raw.ifNameToIndex(name) as number;
  if (idx === 0) throw new BpfError('if_nametoindex', koffi.errno(), name);
  return idx;
}

let cpus: number | undefined;
export function numPossibleCpus(): number {
  cpus ??= check(raw.numCpus() as number, 'libbpf_num_possible_cpus', '');
  return cpus;
}

/** tcx (bpf_link based TC) arrived in Linux 6.6. */
export function probeTcx(kernelRelease = release()): boolean {
  const [major, minor] = kernelRelease.split(/[.-]/).map(Number);
  return major > 6 || (major === 6 && minor >= 6);
}
