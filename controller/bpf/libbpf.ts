/*
 * Typed access to the system libbpf (libbpf.so.1, Debian's 1.1.2) through koffi, split by kind
 * of object as cilium/ebpf is: objects and programs (object.ts), maps with their batch
 * operations (map.ts), links and attach points (link.ts, with the pure rules in link-kind.ts and
 * attach-fallback.ts), feature probes (probes.ts), errors (errors.ts) and libbpf's log with the
 * verifier's (verifier-log.ts). The raw declarations are in libbpf-raw.ts; this file is the
 * binding's public surface: the rest of controller/ imports from it alone (test/unit/layering.test.ts).
 *
 * Every call is synchronous: code that enters another network namespace with setns() for an
 * attach (ifindexes and links are per netns) stays on the thread that entered it.
 */
export { unsupportedBy } from './attach-fallback.js';
export { BpfError, errnoText } from './errors.js';
export { BpfLink, ifNameToIndex, tcClsactAttach, tcClsactDetach, xdpAttachLegacy, xdpDetachLegacy } from './link.js';
export type { LinkInfo, LinkKind, TcxDirection } from './link-kind.js';
export { BpfMap, numPossibleCpus, type MapInfo } from './map.js';
export { BPF_MAP_TYPES, mapTypeName, type BpfMapKind } from './map-types.js';
export { BpfObject, BpfProgram, PinnedProgram, loadInstructions, type OpenOptions, type ProgramRef } from './object.js';
export { Btf, probeHelper, probeMapType, probeTcx, setThreadNetns } from './probes.js';
export { setLibbpfLogger } from './verifier-log.js';
export { RingBuffer } from './ringbuf.js';
