import koffi from 'koffi';
import path from 'node:path';
import { BpfError, check } from './errors.js';
import { closeFd, dupFd, getFromPin, pinFd } from './fd.js';
import { OpenOpts, raw } from './libbpf-raw.js';
import { BpfMap } from './map.js';
import { withCapturedLog } from './verifier-log.js';

/* Objects (an ELF file's programs and maps, loaded together) and programs. */

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
    closeFd(this.progFd);
  }
}

/** bpf_prog_load of raw instructions (a probe's program): no object, no maps, the caller closes it. */
export function loadInstructions(progType: number, name: string, insns: Buffer): ProgramRef & { close(): void } {
  const fd = raw.progLoad(progType, name, 'GPL', insns, insns.length / 8, null) as number;
  if (fd < 0) throw new BpfError('bpf_prog_load', -fd, `${name} (program type ${progType})`);
  return { fd, name, close: () => closeFd(fd) };
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
    const h: unknown = raw.objectOpenFile(objPath, o);
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
    const { rc, log } = withCapturedLog(() => raw.objectLoad(this.handle) as number);
    if (rc < 0) throw new BpfError('bpf_object__load', -rc, `${this.name} from ${this.path}`, log);
  }

  program(name: string): BpfProgram {
    this.assertOpen();
    const p: unknown = raw.findProgram(this.handle, name);
    if (!p) throw new Error(`BPF object ${this.name} (${this.path}): no BPF program named ${name}`);
    return new BpfProgram(name, p, this);
  }

  programs(): BpfProgram[] {
    this.assertOpen();
    const out: BpfProgram[] = [];
    for (let p: unknown = raw.nextProgram(this.handle, null); p; p = raw.nextProgram(this.handle, p))
      out.push(new BpfProgram(raw.programName(p) as string, p, this));
    return out;
  }

  /** An fd-owning handle (a dup of the object's fd): close() it; it stays valid after the object's close(). */
  map(name: string): BpfMap {
    this.assertOpen();
    const m: unknown = raw.findMap(this.handle, name);
    if (!m) throw new Error(`BPF object ${this.name} (${this.path}): no map named ${name}`);
    return this.mapHandle(name, m);
  }

  maps(): BpfMap[] {
    this.assertOpen();
    const out: BpfMap[] = [];
    for (let m: unknown = raw.nextMap(this.handle, null); m; m = raw.nextMap(this.handle, m)) out.push(this.mapHandle(raw.mapName(m) as string, m));
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
