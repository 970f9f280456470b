import type { FieldKind, StructCodec, Decoded } from './codec.js';

/**
 * What the typed wrappers need of an open BPF map (controller/bpf's BpfMap is one). Declared
 * here so that maps/, the layouts shared with the C structs, depends on nothing outside itself:
 * the binding and the agent depend on the layouts, never the other way round.
 */
export interface MapHandle {
  readonly name: string;
  info(): { keySize: number; valueSize: number };
  /** Bytes of one value as user space sees it (every CPU's slot for per-CPU maps). */
  readonly valueBufferSize: number;
  lookup(key: Buffer): Buffer | undefined;
  update(key: Buffer, value: Buffer): void;
  delete(key: Buffer): boolean;
  entries(): Array<[Buffer, Buffer]>;
  updateBatch(keys: Buffer[], values: Buffer[]): void;
  deleteBatch(keys: Buffer[]): void;
  close(): void;
}

/**
 * A BPF map with typed keys and values (in the spirit of cilium/ebpf's Map): callers deal in
 * decoded structs; encoding, batch operations and per-CPU folding happen here.
 */
export class TypedMap<KF extends Record<string, FieldKind>, VF extends Record<string, FieldKind>> {
  constructor(
    readonly map: MapHandle,
    readonly key: StructCodec<KF>,
    readonly value: StructCodec<VF>,
  ) {
    const info = map.info();
    if (info.keySize !== key.size || info.valueSize !== value.size)
      throw new Error(
        `map ${map.name}: layout mismatch, kernel has key ${info.keySize} B / value ${info.valueSize} B, ` +
          `twill expects ${key.cName} ${key.size} B / ${value.cName} ${value.size} B`,
      );
  }

  get(k: Decoded<KF>): Decoded<VF> | undefined {
    const v = this.map.lookup(this.key.encode(k));
    return v && this.value.decode(v);
  }

  put(k: Decoded<KF>, v: Decoded<VF>): void {
    this.map.update(this.key.encode(k), this.value.encode(v));
  }

  delete(k: Decoded<KF>): boolean {
    return this.map.delete(this.key.encode(k));
  }

  entries(): Array<[Decoded<KF>, Decoded<VF>]> {
    return this.map.entries().map(([k, v]) => [this.key.decode(k), this.value.decode(v)]);
  }

  /** All in one batch syscall per chunk; a half-applied batch is retried by the next sync. */
  putMany(items: ReadonlyArray<readonly [Decoded<KF>, Decoded<VF>]>): void {
    if (items.length === 0) return;
    this.map.updateBatch(
      items.map(([k]) => this.key.encode(k)),
      items.map(([, v]) => this.value.encode(v)),
    );
  }

  deleteMany(keys: ReadonlyArray<Decoded<KF>>): void {
    if (keys.length === 0) return;
    this.map.deleteBatch(keys.map((k) => this.key.encode(k)));
  }
}

/** A per-CPU array: reads return every CPU's slot; `sum` folds numeric fields across CPUs. */
export class PerCpuArray<VF extends Record<string, FieldKind>> {
  constructor(
    readonly map: MapHandle,
    readonly value: StructCodec<VF>,
  ) {
    if (map.info().valueSize !== value.size)
      throw new Error(`map ${map.name}: value is ${map.info().valueSize} B in the kernel, twill expects ${value.cName} ${value.size} B`);
  }

  perCpu(index = 0): Decoded<VF>[] {
    const key = Buffer.alloc(4);
    key.writeUInt32LE(index);
    const raw = this.map.lookup(key);
    if (!raw) return [];
    const stride = Math.ceil(this.value.size / 8) * 8;
    const out: Decoded<VF>[] = [];
    for (let off = 0; off + this.value.size <= raw.length; off += stride) out.push(this.value.decode(raw, off));
    return out;
  }

  /** Every CPU's copy of each slot set to zero, in one batch syscall per chunk. */
  zero(indices: readonly number[]): void {
    if (indices.length === 0) return;
    const zeros = Buffer.alloc(this.map.valueBufferSize);
    this.map.updateBatch(
      indices.map((i) => {
        const key = Buffer.alloc(4);
        key.writeUInt32LE(i);
        return key;
      }),
      indices.map(() => zeros),
    );
  }

  sum(index = 0): Decoded<VF> {
    const slots = this.perCpu(index);
    const total: Record<string, unknown> = {};
    for (const f of this.value.fields) {
      total[f.name] = slots.reduce<unknown>(
        (acc, s) => {
          const v = (s as Record<string, unknown>)[f.name];
          return typeof v === 'bigint' ? (acc as bigint) + v : typeof v === 'number' ? (acc as number) + v : v;
        },
        f.kind === 'u64' ? 0n : 0,
      );
    }
    return total as Decoded<VF>;
  }
}
