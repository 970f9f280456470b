import koffi from 'koffi';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { BpfError, check } from './errors.js';
import { raw } from './libbpf-raw.js';

/* What every kind of BPF object shares: fds, pins and bpf_obj_get_info_by_fd. */

const F_DUPFD_CLOEXEC = 1030;

export function dupFd(fd: number, what: string): number {
  const dup = raw.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 3) as number;
  if (dup < 0) throw new BpfError('fcntl(F_DUPFD_CLOEXEC)', koffi.errno(), what);
  return dup;
}

export function closeFd(fd: number): void {
  raw.close(fd);
}

/** bpf_obj_pin creates no directories. */
export function pinFd(fd: number, pinPath: string, what: string): void {
  mkdirSync(path.dirname(pinPath), { recursive: true });
  check(raw.objPin(fd, pinPath) as number, 'bpf_obj_pin', `${what} at ${pinPath}`);
}

/** What kind of BPF object an fd is, from /proc/self/fdinfo (map_type / link_type / prog_type). */
function fdKind(fd: number): 'map' | 'link' | 'prog' | 'other' {
  let info: string;
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

export function getFromPin(pinPath: string, kind: 'map' | 'link' | 'prog'): number {
  const fd = check(raw.objGet(pinPath) as number, 'bpf_obj_get', pinPath);
  const actual = fdKind(fd);
  if (actual !== kind) {
    raw.close(fd);
    throw new Error(`bpf_obj_get(${pinPath}): the pin is a BPF ${actual}, not a ${kind}`);
  }
  return fd;
}

export function getInfo(fd: number, size: number, what: string): Buffer {
  const buf = Buffer.alloc(size); // zeroed: the kernel may know more fields than we do
  const len = [size];
  check(raw.objGetInfoByFd(fd, buf, len) as number, 'bpf_obj_get_info_by_fd', what);
  return buf;
}
