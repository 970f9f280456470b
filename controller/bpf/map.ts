import koffi from 'koffi';
import { unlinkSync } from 'node:fs';
import { EINVAL, ENOENT, ENOSPC, ENOTSUPP, EOPNOTSUPP } from './errno.js';
import { BpfError, check } from './errors.js';
import { closeFd, getFromPin, getInfo, pinFd } from './fd.js';
import { BatchOpts, raw } from './libbpf-raw.js';

/* Maps: single-element and batch operations, per-CPU value sizing, pins. */

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
    closeFd(this.fd);
  }
}

let cpus: number | undefined;
export function numPossibleCpus(): number {
  cpus ??= check(raw.numPossibleCpus() as number, 'libbpf_num_possible_cpus', '');
  return cpus;
}
