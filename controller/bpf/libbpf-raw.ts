import koffi from 'koffi';

/*
 * Raw koffi declarations for the system libbpf (libbpf.so.1, Debian's 1.1.2) and the few libc
 * calls the binding needs. Nothing here is exported outside controller/bpf: pointers are
 * untyped and every int function returns -errno, so only the binding's typed wrappers call these.
 *
 * The opts structs mirror /usr/include/bpf/{libbpf,bpf}.h of libbpf 1.1.2 field for field;
 * their trailing `size_t :0` only pads to 8 bytes, which koffi's natural alignment reproduces.
 * `sz` must be koffi.sizeof(...) of the struct (libbpf rejects a larger sz with non-zero tail).
 */

const lib = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

/** struct bpf_object_open_opts (libbpf.h); 80 bytes. */
export const OpenOpts = koffi.struct('twill_bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  removed_attach_prog_fd: 'uint32_t', // `__u32 :32` stub
  kconfig: 'const char *',
  btf_custom_path: 'const char *',
  kernel_log_buf: 'void *',
  kernel_log_size: 'size_t',
  kernel_log_level: 'uint32_t',
});

/** struct bpf_link_create_opts (bpf.h); 64 bytes. Only the kprobe_multi arm of the union is
 * declared: it is the largest (32 bytes) and twill never fills any arm. */
const LinkCreateKprobeMulti = koffi.struct('twill_bpf_link_create_kprobe_multi', {
  flags: 'uint32_t',
  cnt: 'uint32_t',
  syms: 'void *',
  addrs: 'void *',
  cookies: 'void *',
});
export const LinkCreateOpts = koffi.struct('twill_bpf_link_create_opts', {
  sz: 'size_t',
  flags: 'uint32_t',
  iter_info: 'void *',
  iter_info_len: 'uint32_t',
  target_btf_id: 'uint32_t',
  kprobe_multi: LinkCreateKprobeMulti,
});

/** struct bpf_map_batch_opts (bpf.h); 24 bytes. */
export const BatchOpts = koffi.struct('twill_bpf_map_batch_opts', { sz: 'size_t', elem_flags: 'uint64_t', flags: 'uint64_t' });

/** struct bpf_tc_hook (libbpf.h); 24 bytes. */
export const TcHook = koffi.struct('twill_bpf_tc_hook', { sz: 'size_t', ifindex: 'int', attach_point: 'int', parent: 'uint32_t' });

/** struct bpf_tc_opts (libbpf.h); 32 bytes. */
export const TcOpts = koffi.struct('twill_bpf_tc_opts', {
  sz: 'size_t',
  prog_fd: 'int',
  flags: 'uint32_t',
  prog_id: 'uint32_t',
  handle: 'uint32_t',
  priority: 'uint32_t',
});

/** struct bpf_xdp_attach_opts (libbpf.h); 16 bytes. */
export const XdpAttachOpts = koffi.struct('twill_bpf_xdp_attach_opts', { sz: 'size_t', old_prog_fd: 'int' });

/** libbpf_print_fn_t: int (*)(enum libbpf_print_level, const char *fmt, va_list). On x86-64 and
 * arm64 a va_list argument arrives as a pointer to the va_list structure, so `void *` it is. */
export const PrintFn = koffi.proto('int twill_libbpf_print_fn(int level, void *fmt, void *args)');

export const raw = {
  objectOpenFile: lib.func('void *bpf_object__open_file(const char *path, const twill_bpf_object_open_opts *opts)'),
  objectLoad: lib.func('int bpf_object__load(void *obj)'),
  objectClose: lib.func('void bpf_object__close(void *obj)'),
  objectName: lib.func('const char *bpf_object__name(void *obj)'),
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
  objGetInfoByFd: lib.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)'),
  mapLookupElem: lib.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  mapUpdateElem: lib.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  mapDeleteElem: lib.func('int bpf_map_delete_elem(int fd, const void *key)'),
  mapGetNextKey: lib.func('int bpf_map_get_next_key(int fd, const void *key, void *next)'),
  mapUpdateBatch: lib.func(
    'int bpf_map_update_batch(int fd, const void *keys, const void *values, _Inout_ uint32_t *count, const twill_bpf_map_batch_opts *opts)',
  ),
  mapDeleteBatch: lib.func('int bpf_map_delete_batch(int fd, const void *keys, _Inout_ uint32_t *count, const twill_bpf_map_batch_opts *opts)'),
  mapLookupBatch: lib.func(
    'int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values, _Inout_ uint32_t *count, const twill_bpf_map_batch_opts *opts)',
  ),
  progQuery: lib.func(
    'int bpf_prog_query(int target_fd, int type, uint32_t query_flags, _Out_ uint32_t *attach_flags, void *prog_ids, _Inout_ uint32_t *prog_cnt)',
  ),
  linkCreate: lib.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const twill_bpf_link_create_opts *opts)'),
  linkUpdate: lib.func('int bpf_link_update(int link_fd, int new_prog_fd, void *opts)'),
  linkDetach: lib.func('int bpf_link_detach(int link_fd)'),
  tcHookCreate: lib.func('int bpf_tc_hook_create(twill_bpf_tc_hook *hook)'),
  tcAttach: lib.func('int bpf_tc_attach(const twill_bpf_tc_hook *hook, _Inout_ twill_bpf_tc_opts *opts)'),
  tcDetach: lib.func('int bpf_tc_detach(const twill_bpf_tc_hook *hook, const twill_bpf_tc_opts *opts)'),
  xdpAttach: lib.func('int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags, const twill_bpf_xdp_attach_opts *opts)'),
  xdpDetach: lib.func('int bpf_xdp_detach(int ifindex, uint32_t flags, const twill_bpf_xdp_attach_opts *opts)'),
  numPossibleCpus: lib.func('int libbpf_num_possible_cpus(void)'),
  setPrint: lib.func('void *libbpf_set_print(twill_libbpf_print_fn *fn)'),
  // feature probes (probes.ts): 1 supported, 0 not, -errno when the probe itself failed
  probeProgType: lib.func('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)'),
  probeMapType: lib.func('int libbpf_probe_bpf_map_type(int map_type, const void *opts)'),
  probeHelper: lib.func('int libbpf_probe_bpf_helper(int prog_type, int helper_id, const void *opts)'),
  progLoad: lib.func('int bpf_prog_load(int prog_type, const char *name, const char *license, const void *insns, size_t insn_cnt, const void *opts)'),
  btfParse: lib.func('void *btf__parse(const char *path, void *btf_ext)'),
  btfParseSplit: lib.func('void *btf__parse_split(const char *path, void *base_btf)'),
  btfFindByNameKind: lib.func('int btf__find_by_name_kind(void *btf, const char *name, uint32_t kind)'),
  btfFree: lib.func('void btf__free(void *btf)'),

  strerror: libc.func('const char *strerror(int errnum)'),
  close: libc.func('int close(int fd)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  ifNameToIndex: libc.func('unsigned int if_nametoindex(const char *name)'),
  vsnprintf: libc.func('int vsnprintf(void *buf, size_t size, void *fmt, void *ap)'),
  setns: libc.func('int setns(int fd, int nstype)'),
};
