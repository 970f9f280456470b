import koffi from 'koffi';
import { mkdirSync, readFileSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { logger } from '../util/log.js';
import { BatchOpts, LinkCreateOpts, OpenOpts, PrintFn, TcHook, TcOpts, XdpAttachOpts, raw } from './libbpf-raw.js';

/*
 * Typed access to the system libbpf (libbpf.so.1, Debian's 1.1.2) through koffi. The raw
 * declarations live in libbpf-raw.ts; everything exported here is a typed wrapper whose errors
 * name the libbpf function, what it was called on, the errno text and, for loads, the verifier log.
 *
 * Every call is synchronous: code that enters another network namespace with setns() for an
 * attach (ifindexes and links are per netns) stays on the thread that entered it.
 */

// ---------------------------------------------------------------------------------------------
// errors

const ENOENT = 2;
const EEXIST = 17;
const EINVAL = 22;
const ENOSPC = 28;
const EOPNOTSUPP = 95;
/** The kernel's internal ENOTSUPP leaks out of bpf() for "this map type has no batch ops". */
const ENOTSUPP = 524;

export function errnoText(errno: number): string {
  if (errno === ENOTSUPP) return 'Operation not supported (kernel ENOTSUPP)';
  return raw.strerror(errno) as string;
}

/** Lines of a verifier log kept in BpfError.message (the whole captured log is in verifierLog). */
const LOG_TAIL_LINES = 60;

export class BpfError extends Error {
  override name = 'BpfError';
  constructor(
    readonly fn: string,
    readonly errno: number,
    context: string,
    readonly verifierLog?: string,
  ) {
    const tail = verifierLog ? verifierLog.split('\n').slice(-LOG_TAIL_LINES).join('\n') : '';
    super(`${fn}(${context}) failed: ${errnoText(errno)} (errno ${errno})` + (tail ? `\nverifier log (last ${LOG_TAIL_LINES} lines):\n${tail}` : ''));
  }
}

/** libbpf 1.x int functions return -errno (and set errno too). */
function check(rc: number, fn: string, context: string): number {
  if (rc < 0) throw new BpfError(fn, -rc, context);
  return rc;
}

// ---------------------------------------------------------------------------------------------
// the libbpf log

type LogLevel = 'warn' | 'info' | 'debug';
const LEVELS: readonly LogLevel[] = ['warn', 'info', 'debug']; // enum libbpf_print_level

const libbpfLog = logger('libbpf');
const defaultLogger = (level: LogLevel, msg: string) => {
  if (level === 'warn') libbpfLog.warn(msg);
};
let userLogger: (level: LogLevel, msg: string) => void = defaultLogger;

/** Warn-level messages printed during the current bpf_object__load, for its verifier log. */
let capture: string[] | undefined;

/**
 * va_copy is a plain struct copy on x86-64 (24-byte __va_list_tag) and arm64 (32-byte struct),
 * which lets a message longer than the scratch buffer be formatted a second time with an
 * untouched copy. Elsewhere one pass into a large buffer has to do.
 */
const VA_LIST_SIZE = process.arch === 'x64' ? 24 : process.arch === 'arm64' ? 32 : 0;
const scratch = Buffer.alloc(VA_LIST_SIZE ? 4096 : 1 << 20);
const MAX_MESSAGE = 64 << 20;

function formatVa(fmt: unknown, args: unknown): string {
  if (!VA_LIST_SIZE) {
    const n = raw.vsnprintf(scratch, scratch.length, fmt, args) as number;
    return scratch.toString('utf8', 0, Math.max(0, Math.min(n, scratch.length - 1)));
  }
  const saved = Buffer.from(new Uint8Array(koffi.view(args, VA_LIST_SIZE))); // copies
  const n = raw.vsnprintf(scratch, scratch.length, fmt, Buffer.from(saved)) as number;
  if (n < 0) return '';
  if (n < scratch.length) return scratch.toString('utf8', 0, n);
  const big = Buffer.alloc(Math.min(n + 1, MAX_MESSAGE));
  const m = raw.vsnprintf(big, big.length, fmt, saved) as number;
  return big.toString('utf8', 0, Math.max(0, Math.min(m, big.length - 1)));
}

const printCallback = koffi.register(
  (level: number, fmt: unknown, args: unknown): number => {
    try {
      const text = formatVa(fmt, args).replace(/\n$/, '');
      const lvl = LEVELS[level] ?? 'debug';
      if (lvl === 'warn') capture?.push(text);
      userLogger(lvl, text);
    } catch {
      // never throw into C
    }
    return 0;
  },
  koffi.pointer(PrintFn),
);
raw.setPrint(printCallback);

/** Routes libbpf's own messages (libbpf_set_print); by default warnings go to the 'libbpf' logger. */
export function setLibbpfLogger(fn: (level: LogLevel, msg: string) => void): void {
  userLogger = fn;
}

/** The verifier's part of what libbpf printed during a failed load, or all its warnings. */
function verifierLogOf(lines: string[]): string | undefined {
  const text = lines.join('\n');
  const parts: string[] = [];
  const re = /-- BEGIN PROG LOAD LOG --\n?([\s\S]*?)-- END PROG LOAD LOG --/g;
  for (let m = re.exec(text); m; m = re.exec(text)) parts.push(m[1].replace(/\n$/, ''));
  const log = parts.length ? parts.join('\n') : text;
  return log.trim() ? log : undefined;
}

// ---------------------------------------------------------------------------------------------
// small helpers

const F_DUPFD_CLOEXEC = 1030;

function dupFd(fd: number, what: string): number {
  const dup = raw.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 3) as number;
  if (dup < 0) throw new BpfError('fcntl(F_DUPFD_CLOEXEC)', koffi.errno(), what);
  return dup;
}

/** bpf_obj_pin creates no directories. */
function pinFd(fd: number, pinPath: string, what: string): void {
  mkdirSync(path.dirname(pinPath), { recursive: true });
  check(raw.objPin(fd, pinPath) as number, 'bpf_obj_pin', `${what} at ${pinPath}`);
}

/** What kind of BPF object an fd is, from /proc/self/fdinfo (map_type / link_type / prog_type). */
function fdKind(fd: number): 'map' | 'link' | 'prog' | 'other' {
  let info = '';
  try {
    info = readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
  } catch {
    return 'other';
  }
  if (/^map_type:/m.test(info)) return 'map';
  if (/^link_type:/m.test(info)) return 'link';
  if (/^prog_type:/m.test(info)) return 'prog';
  return 'other';
}

function getFromPin(pinPath: string, kind: 'map' | 'link' | 'prog'): number {
  const fd = check(raw.objGet(pinPath) as number, 'bpf_obj_get', pinPath);
  const actual = fdKind(fd);
  if (actual !== kind) {
    raw.close(fd);
    throw new Error(`bpf_obj_get(${pinPath}): the pin is a BPF ${actual}, not a ${kind}`);
  }
  return fd;
}

function getInfo(fd: number, size: number, what: string): Buffer {
  const buf = Buffer.alloc(size); // zeroed: the kernel may know more fields than we do
  const len = [size];
  check(raw.objGetInfoByFd(fd, buf, len) as number, 'bpf_obj_get_info_by_fd', what);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// objects and programs

export interface OpenOptions {
  /** Where maps declared with LIBBPF_PIN_BY_NAME are pinned and reused (default /sys/fs/bpf). */
  pinRootPath?: string;
  /** Overrides the object name taken from the file name. */
  objectName?: string;
}

/** What attaching needs of a program: its fd and, for error messages, its name. */
export interface ProgramRef {
  readonly fd: number;
  readonly name: string;
}

/**
 * A loaded program held by fd alone, opened from its pin: lets a process attach a program it
 * did not load (the agent attaching pod veths with the program the last load pinned).
 */
export class PinnedProgram implements ProgramRef {
  private closed = false;
  private constructor(
    readonly name: string,
    private readonly progFd: number,
  ) {}

  static fromPin(pinPath: string): PinnedProgram {
    return new PinnedProgram(path.basename(pinPath), getFromPin(pinPath, 'prog'));
  }

  get fd(): number {
    if (this.closed) throw new Error(`program ${this.name} is closed`);
    return this.progFd;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    raw.close(this.progFd);
  }
}

export class BpfProgram {
  /** @internal created by BpfObject */
  constructor(
    readonly name: string,
    private readonly handle: unknown,
    private readonly owner: BpfObject,
  ) {}

  /** The program's fd; owned by its object (valid from load() until the object's close()). */
  get fd(): number {
    this.owner.assertOpen();
    return check(raw.programFd(this.handle) as number, 'bpf_program__fd', `${this.owner.name}/${this.name} (not loaded?)`);
  }

  pin(pinPath: string): void {
    pinFd(this.fd, pinPath, `program ${this.name}`);
  }
}

export class BpfObject {
  private closed = false;
  private constructor(
    /** The object's name (file base name unless OpenOptions.objectName). */
    readonly name: string,
    readonly path: string,
    private readonly handle: unknown,
  ) {}

  static open(objPath: string, opts: OpenOptions = {}): BpfObject {
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
    const h = raw.objectOpenFile(objPath, o);
    if (!h) throw new BpfError('bpf_object__open_file', koffi.errno(), objPath);
    return new BpfObject((raw.objectName(h) as string) || objPath, objPath, h);
  }

  /** @internal */
  assertOpen(): void {
    if (this.closed) throw new Error(`BPF object ${this.name} (${this.path}) is closed`);
  }

  /** Loads every program (and creates or reuses the maps); a rejection carries the verifier log. */
  load(): void {
    this.assertOpen();
    const lines: string[] = [];
    capture = lines;
    let rc: number;
    try {
      rc = raw.objectLoad(this.handle) as number;
    } finally {
      capture = undefined;
    }
    if (rc < 0) throw new BpfError('bpf_object__load', -rc, `${this.name} from ${this.path}`, verifierLogOf(lines));
  }

  program(name: string): BpfProgram {
    this.assertOpen();
    const p = raw.findProgram(this.handle, name);
    if (!p) throw new Error(`BPF object ${this.name} (${this.path}): no BPF program named ${name}`);
    return new BpfProgram(name, p, this);
  }

  programs(): BpfProgram[] {
    this.assertOpen();
    const out: BpfProgram[] = [];
    for (let p = raw.nextProgram(this.handle, null); p; p = raw.nextProgram(this.handle, p))
      out.push(new BpfProgram(raw.programName(p) as string, p, this));
    return out;
  }

  /** An fd-owning handle (a dup of the object's fd): close() it; it stays valid after the object's close(). */
  map(name: string): BpfMap {
    this.assertOpen();
    const m = raw.findMap(this.handle, name);
    if (!m) throw new Error(`BPF object ${this.name} (${this.path}): no map named ${name}`);
    return this.mapHandle(name, m);
  }

  maps(): BpfMap[] {
    this.assertOpen();
    const out: BpfMap[] = [];
    for (let m = raw.nextMap(this.handle, null); m; m = raw.nextMap(this.handle, m)) out.push(this.mapHandle(raw.mapName(m) as string, m));
    return out;
  }

  private mapHandle(name: string, m: unknown): BpfMap {
    const fd = check(raw.mapFd(m) as number, 'bpf_map__fd', `${this.name}/${name} (not loaded?)`);
    return new BpfMap(name, dupFd(fd, `map ${name}`));
  }

  /** bpf_object__close: the object's own fds go; pinned maps and links (and dup'd handles) survive. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    raw.objectClose(this.handle);
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

const MAP_PERCPU_TYPES = new Set([5 /* PERCPU_HASH */, 6 /* PERCPU_ARRAY */, 10 /* LRU_PERCPU_HASH */]);
const UPDATE_FLAGS = { any: 0, noexist: 1, exist: 2 } as const;
/** Entries per bpf_map_*_batch syscall. */
const BATCH_CHUNK = 8192;
const BPF_MAP_INFO_SIZE = 88; // struct bpf_map_info up to map_extra (6.1 header)

export class BpfMap {
  private cachedInfo?: MapInfo;
  private closed = false;

  /** @internal takes ownership of fd; use BpfObject.map() or BpfMap.fromPin(). */
  constructor(
    readonly name: string,
    readonly fd: number,
  ) {}

  static fromPin(pinPath: string): BpfMap {
    const fd = getFromPin(pinPath, 'map');
    const m = new BpfMap(pinPath, fd);
    let name: string;
    try {
      name = m.info().name;
    } catch (err) {
      m.close();
      throw err;
    }
    const named = new BpfMap(name || pinPath, fd);
    named.cachedInfo = m.cachedInfo;
    return named;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`map ${this.name} is closed`);
  }

  /** bpf_obj_get_info_by_fd; cached (a map's shape never changes). */
  info(): MapInfo {
    this.assertOpen();
    if (!this.cachedInfo) {
      const b = getInfo(this.fd, BPF_MAP_INFO_SIZE, `map ${this.name}`);
      this.cachedInfo = {
        type: b.readUInt32LE(0),
        id: b.readUInt32LE(4),
        keySize: b.readUInt32LE(8),
        valueSize: b.readUInt32LE(12),
        maxEntries: b.readUInt32LE(16),
        flags: b.readUInt32LE(20),
        name: b.toString('utf8', 24, 40).replace(/\0[\s\S]*$/, ''),
        btfId: b.readUInt32LE(64),
        btfKeyTypeId: b.readUInt32LE(68),
        btfValueTypeId: b.readUInt32LE(72),
      };
    }
    return this.cachedInfo;
  }

  get isPerCpu(): boolean {
    return MAP_PERCPU_TYPES.has(this.info().type);
  }

  /** Bytes of one value as user space sees it: per-CPU maps hold one 8-byte-aligned slot per possible CPU. */
  get valueBufferSize(): number {
    const { valueSize } = this.info();
    return this.isPerCpu ? Math.ceil(valueSize / 8) * 8 * numPossibleCpus() : valueSize;
  }

  private checkKey(key: Buffer): void {
    const { keySize } = this.info();
    if (key.length !== keySize) throw new Error(`map ${this.name}: key is ${key.length} bytes, the map's keys are ${keySize}`);
  }

  private checkValue(value: Buffer): void {
    const size = this.valueBufferSize;
    if (value.length !== size) throw new Error(`map ${this.name}: value is ${value.length} bytes, expected ${size}`);
  }

  lookup(key: Buffer): Buffer | undefined {
    this.checkKey(key);
    const value = Buffer.alloc(this.valueBufferSize);
    const rc = raw.mapLookupElem(this.fd, key, value) as number;
    if (rc === -ENOENT) return undefined;
    check(rc, 'bpf_map_lookup_elem', `map ${this.name}`);
    return value;
  }

  update(key: Buffer, value: Buffer, flags: 'any' | 'noexist' | 'exist' = 'any'): void {
    this.checkKey(key);
    this.checkValue(value);
    check(raw.mapUpdateElem(this.fd, key, value, UPDATE_FLAGS[flags]) as number, 'bpf_map_update_elem', `map ${this.name}`);
  }

  delete(key: Buffer): boolean {
    this.checkKey(key);
    const rc = raw.mapDeleteElem(this.fd, key) as number;
    if (rc === -ENOENT) return false;
    check(rc, 'bpf_map_delete_elem', `map ${this.name}`);
    return true;
  }

  keys(): Buffer[] {
    const { keySize } = this.info();
    const out: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(keySize);
      const rc = raw.mapGetNextKey(this.fd, prev, next) as number;
      if (rc === -ENOENT) return out;
      check(rc, 'bpf_map_get_next_key', `map ${this.name}`);
      out.push(next);
      prev = next;
    }
  }

  /** All entries: bpf_map_lookup_batch where the map type has it, else keys() + lookup(). */
  entries(): Array<[Buffer, Buffer]> {
    this.assertOpen();
    const batched = this.lookupBatchAll();
    if (batched) return batched;
    const out: Array<[Buffer, Buffer]> = [];
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v) out.push([k, v]); // deleted between the two calls: skip
    }
    return out;
  }

  /** undefined when this map type has no lookup batch (checked by the first call). */
  private lookupBatchAll(): Array<[Buffer, Buffer]> | undefined {
    const { keySize, maxEntries } = this.info();
    const vsize = this.valueBufferSize;
    const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
    const out: Array<[Buffer, Buffer]> = [];
    // Hash maps use a 4-byte bucket cursor, generic (array) batches the previous key.
    const tokens = [Buffer.alloc(Math.max(keySize, 8)), Buffer.alloc(Math.max(keySize, 8))];
    let inBatch: Buffer | null = null;
    let chunk = Math.max(1, Math.min(maxEntries, BATCH_CHUNK));
    let keys = Buffer.alloc(keySize * chunk);
    let values = Buffer.alloc(vsize * chunk);
    for (let turn = 0; ; turn++) {
      const outBatch = tokens[turn % 2];
      const count = [chunk];
      const rc = raw.mapLookupBatch(this.fd, inBatch, outBatch, keys, values, count, opts) as number;
      if (rc < 0 && rc !== -ENOENT) {
        if (out.length === 0 && inBatch === null && [EINVAL, ENOTSUPP, EOPNOTSUPP].includes(-rc)) return undefined;
        if (rc === -ENOSPC && count[0] === 0 && chunk < maxEntries) {
          // a hash bucket holds more entries than fit: retry this step with room for more
          chunk = Math.min(maxEntries, chunk * 2);
          keys = Buffer.alloc(keySize * chunk);
          values = Buffer.alloc(vsize * chunk);
          turn--;
          continue;
        }
        check(rc, 'bpf_map_lookup_batch', `map ${this.name}, after ${out.length} entries`);
      }
      for (let i = 0; i < count[0]; i++)
        out.push([Buffer.from(keys.subarray(i * keySize, (i + 1) * keySize)), Buffer.from(values.subarray(i * vsize, (i + 1) * vsize))]);
      if (rc === -ENOENT) return out;
      inBatch = outBatch;
    }
  }

  /** bpf_map_update_batch, one syscall per chunk of BATCH_CHUNK entries; empty input does nothing. */
  updateBatch(keys: Buffer[], values: Buffer[]): void {
    if (keys.length !== values.length) throw new Error(`map ${this.name}: ${keys.length} keys but ${values.length} values`);
    if (keys.length === 0) return;
    keys.forEach((k) => this.checkKey(k));
    values.forEach((v) => this.checkValue(v));
    const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
    for (let start = 0; start < keys.length; start += BATCH_CHUNK) {
      const end = Math.min(keys.length, start + BATCH_CHUNK);
      const count = [end - start];
      const rc = raw.mapUpdateBatch(this.fd, Buffer.concat(keys.slice(start, end)), Buffer.concat(values.slice(start, end)), count, opts) as number;
      check(rc, 'bpf_map_update_batch', `map ${this.name}, ${keys.length} entries, ${start + count[0]} applied`);
    }
  }

  /**
   * bpf_map_delete_batch per chunk. Keys that are already gone are skipped. Map types without a
   * delete batch (arrays, LPM tries: ENOTSUPP/EINVAL) fall back to one delete per key, which for
   * arrays fails with EINVAL as deleting an array element always does.
   */
  deleteBatch(keys: Buffer[]): void {
    if (keys.length === 0) return;
    keys.forEach((k) => this.checkKey(k));
    const opts = { sz: koffi.sizeof(BatchOpts), elem_flags: 0, flags: 0 };
    let start = 0;
    while (start < keys.length) {
      const end = Math.min(keys.length, start + BATCH_CHUNK);
      const count = [end - start];
      const rc = raw.mapDeleteBatch(this.fd, Buffer.concat(keys.slice(start, end)), count, opts) as number;
      if (rc >= 0) {
        start = end;
        continue;
      }
      // The kernel writes back how many keys it deleted only once it ran the loop; an error
      // before that (unsupported map type, bad flags) leaves the count as it was passed in.
      const done = count[0] < end - start ? count[0] : 0;
      if (rc === -ENOENT) {
        start += done + 1; // the batch stopped at a key that is not there
        continue;
      }
      if (rc === -EINVAL || rc === -ENOTSUPP || rc === -EOPNOTSUPP) {
        for (const k of keys.slice(start + done)) this.delete(k);
        return;
      }
      check(rc, 'bpf_map_delete_batch', `map ${this.name}, ${keys.length} keys, ${start + done} deleted`);
    }
  }

  pin(pinPath: string): void {
    this.assertOpen();
    pinFd(this.fd, pinPath, `map ${this.name}`);
  }

  /** Removes a pin (the map lives on while fds or programs still hold it). */
  unpin(pinPath: string): void {
    try {
      unlinkSync(pinPath);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new BpfError('unlink', Math.abs(e.errno ?? EINVAL), `pin of map ${this.name} at ${pinPath}`);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    raw.close(this.fd);
  }
}

// ---------------------------------------------------------------------------------------------
// links and attach points

export type TcxDirection = 'ingress' | 'egress';
export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  /** xdp, tcx and netkit links */
  ifindex?: number;
  /** tcx (46/47) and netkit links; XDP links report none */
  attachType?: number;
}

const BPF_XDP = 37;
const BPF_TCX = { ingress: 46, egress: 47 } as const;
const LINK_TYPE_XDP = 6;
const LINK_TYPE_TCX = 11;
const LINK_TYPE_NETKIT = 13;
const BPF_LINK_INFO_SIZE = 256; // larger than any kernel's struct bpf_link_info; zero tail is accepted

export class BpfLink {
  private closed = false;
  private constructor(
    readonly fd: number,
    private readonly what: string,
  ) {}

  static fromPin(pinPath: string): BpfLink {
    return new BpfLink(getFromPin(pinPath, 'link'), `link pinned at ${pinPath}`);
  }

  /**
   * An XDP link. 'any': driver (native) mode where the device has it (veth does), generic
   * otherwise; 'native': driver mode or an error (EOPNOTSUPP on a driver without XDP).
   */
  static attachXdp(prog: ProgramRef, ifindex: number, mode: 'any' | 'native' = 'any'): BpfLink {
    const what = `xdp ${mode === 'native' ? 'native ' : ''}${prog.name} on ifindex ${ifindex}`;
    const opts = { ...linkCreateOpts(), flags: mode === 'native' ? XDP_MODE.native : 0 };
    return new BpfLink(check(raw.linkCreate(prog.fd, ifindex, BPF_XDP, opts) as number, 'bpf_link_create', what), what);
  }

  /** A tcx link (Linux 6.6+); see probeTcx(). */
  static attachTcx(prog: ProgramRef, ifindex: number, dir: TcxDirection): BpfLink {
    const what = `tcx ${dir} ${prog.name} on ifindex ${ifindex}`;
    return new BpfLink(check(raw.linkCreate(prog.fd, ifindex, BPF_TCX[dir], null) as number, 'bpf_link_create', what), what);
  }

  /** Pinned, the link (and so the attachment) outlives the fd and the process. */
  pin(pinPath: string): void {
    this.assertOpen();
    pinFd(this.fd, pinPath, this.what);
  }

  /** Atomic: packets see either the old program or the new one, never none. */
  update(prog: ProgramRef): void {
    this.assertOpen();
    check(raw.linkUpdate(this.fd, prog.fd, null) as number, 'bpf_link_update', `${this.what} -> ${prog.name}`);
  }

  info(): LinkInfo {
    this.assertOpen();
    const b = getInfo(this.fd, BPF_LINK_INFO_SIZE, this.what);
    const type = b.readUInt32LE(0);
    const out: LinkInfo = { type, id: b.readUInt32LE(4), progId: b.readUInt32LE(8) };
    // The union starts at 16 (8-aligned); xdp: { ifindex }, tcx/netkit: { ifindex, attach_type }.
    if (type === LINK_TYPE_XDP || type === LINK_TYPE_TCX || type === LINK_TYPE_NETKIT) out.ifindex = b.readUInt32LE(16);
    if (type === LINK_TYPE_TCX || type === LINK_TYPE_NETKIT) out.attachType = b.readUInt32LE(20);
    return out;
  }

  /** Detaches the program from its hook; the link object (and its pin) stays, defunct. */
  detach(): void {
    this.assertOpen();
    check(raw.linkDetach(this.fd) as number, 'bpf_link_detach', this.what);
  }

  /** Closes the fd only: a pinned link stays attached. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    raw.close(this.fd);
  }

  private assertOpen(): void {
    if (this.closed) throw new Error(`${this.what} is closed`);
  }
}

function linkCreateOpts() {
  return {
    sz: koffi.sizeof(LinkCreateOpts),
    flags: 0,
    iter_info: null,
    iter_info_len: 0,
    target_btf_id: 0,
    kprobe_multi: { flags: 0, cnt: 0, syms: null, addrs: null, cookies: null },
  };
}

const TC_POINT = { ingress: 1 /* BPF_TC_INGRESS */, egress: 2 /* BPF_TC_EGRESS */ } as const;
const BPF_TC_F_REPLACE = 1;

function tcHook(ifindex: number, dir: TcxDirection) {
  return { sz: koffi.sizeof(TcHook), ifindex, attach_point: TC_POINT[dir], parent: 0 };
}

/** clsact qdisc (kept if present) + a direct-action filter, for kernels without tcx; re-attaching replaces the filter atomically. */
export function tcClsactAttach(prog: ProgramRef, ifindex: number, dir: TcxDirection, opts: { handle?: number; priority?: number } = {}): void {
  const hook = tcHook(ifindex, dir);
  const rc = raw.tcHookCreate(hook) as number;
  if (rc < 0 && rc !== -EEXIST) check(rc, 'bpf_tc_hook_create', `clsact on ifindex ${ifindex}`);
  const o = { sz: koffi.sizeof(TcOpts), prog_fd: prog.fd, flags: BPF_TC_F_REPLACE, prog_id: 0, handle: opts.handle ?? 1, priority: opts.priority ?? 1 };
  check(raw.tcAttach(hook, o) as number, 'bpf_tc_attach', `${dir} ${prog.name} on ifindex ${ifindex}`);
}

/** Removes the filter (handle/priority as attached); a filter that is already gone is not an error. The clsact qdisc stays. */
export function tcClsactDetach(ifindex: number, dir: TcxDirection, opts: { handle?: number; priority?: number } = {}): void {
  const o = { sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, handle: opts.handle ?? 1, priority: opts.priority ?? 1 };
  const rc = raw.tcDetach(tcHook(ifindex, dir), o) as number;
  if (rc < 0 && rc !== -ENOENT) check(rc, 'bpf_tc_detach', `${dir} on ifindex ${ifindex}`);
}

const XDP_MODE = { native: 4 /* XDP_FLAGS_DRV_MODE */, generic: 2 /* XDP_FLAGS_SKB_MODE */ } as const;

function xdpAttachOpts() {
  return { sz: koffi.sizeof(XdpAttachOpts), old_prog_fd: 0 };
}

/** Netlink XDP attachment (no link object): replaces whatever program is in that mode. */
export function xdpAttachLegacy(prog: BpfProgram, ifindex: number, mode: 'native' | 'generic'): void {
  check(raw.xdpAttach(ifindex, prog.fd, XDP_MODE[mode], xdpAttachOpts()) as number, 'bpf_xdp_attach', `${mode} ${prog.name} on ifindex ${ifindex}`);
}

export function xdpDetachLegacy(ifindex: number, mode: 'native' | 'generic'): void {
  check(raw.xdpDetach(ifindex, XDP_MODE[mode], xdpAttachOpts()) as number, 'bpf_xdp_detach', `${mode} on ifindex ${ifindex}`);
}

// ---------------------------------------------------------------------------------------------
// small facts

/** if_nametoindex in the calling thread's network namespace. */
export function ifNameToIndex(name: string): number {
  const idx = raw.ifNameToIndex(name) as number;
  if (idx === 0) throw new BpfError('if_nametoindex', koffi.errno(), name);
  return idx;
}

let cpus: number | undefined;
export function numPossibleCpus(): number {
  cpus ??= check(raw.numPossibleCpus() as number, 'libbpf_num_possible_cpus', '');
  return cpus;
}

let tcx: boolean | undefined;
/**
 * Whether BPF_TCX link attach exists (Linux 6.6+). Probed once with a BPF_PROG_QUERY for
 * BPF_TCX_INGRESS on loopback: kernels without tcx reject the attach type with EINVAL, kernels
 * with it answer (or say ENODEV if ifindex 1 were missing). No program is loaded.
 */
export function probeTcx(): boolean {
  if (tcx === undefined) {
    const attachFlags = [0];
    const count = [0];
    const rc = raw.progQuery(1, BPF_TCX.ingress, 0, attachFlags, null, count) as number;
    tcx = rc >= 0 || rc === -19 /* ENODEV */;
    if (!tcx && rc !== -EINVAL) libbpfLog.warn('tcx probe failed, assuming no tcx', { error: errnoText(-rc), errno: -rc });
  }
  return tcx;
}
