/**
 * The kernel's `enum bpf_map_type` values (include/uapi/linux/bpf.h) for the kinds of map twill
 * declares (maps/layout.ts names them), probes or shows: the one place they are written.
 */
export const BPF_MAP_TYPES = { hash: 1, array: 2, percpu_hash: 5, percpu_array: 6, lru_hash: 9, lpm_trie: 11, ringbuf: 27 } as const;
export type BpfMapKind = keyof typeof BPF_MAP_TYPES;

/** The kind's name for a type id, as `twill status` shows it; undefined for a kind twill does not use. */
export const mapTypeName = (id: number): BpfMapKind | undefined => (Object.keys(BPF_MAP_TYPES) as BpfMapKind[]).find((k) => BPF_MAP_TYPES[k] === id);
