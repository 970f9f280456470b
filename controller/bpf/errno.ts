/*
 * The errno values the binding decides on. Pure (no libbpf loaded), so the decisions built on
 * them are unit-tested without a kernel.
 */
export const ENOENT = 2;
export const EEXIST = 17;
export const ENODEV = 19;
export const EINVAL = 22;
export const ENOSPC = 28;
export const EOPNOTSUPP = 95;
/** The kernel's internal ENOTSUPP leaks out of bpf() for "this map type has no batch ops". */
export const ENOTSUPP = 524;
