import koffi from 'koffi';
import { BpfError } from './errors.js';

/*
 * A consumer of a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) through libbpf's ring_buffer__new and
 * ring_buffer__consume. The declarations stay here, private, beside their one typed wrapper: the
 * sample callback is a koffi callback, and every record is copied into a Buffer before it
 * returns, since libbpf reuses the memory as soon as the callback is done.
 *
 * Only non-blocking consumption is offered: a CLI drives it from a timer on the main thread, so
 * the callback always runs on the thread that registered it.
 */

const lib = koffi.load('libbpf.so.1');

const SampleFn = koffi.proto('int twill_ring_buffer_sample_fn(void *ctx, void *data, size_t size)');
const ringBufferNew = lib.func('void *ring_buffer__new(int map_fd, twill_ring_buffer_sample_fn *sample_cb, void *ctx, const void *opts)');
const ringBufferConsume = lib.func('int ring_buffer__consume(void *rb)');
const ringBufferFree = lib.func('void ring_buffer__free(void *rb)');

export class RingBuffer {
  private handle: unknown;
  private readonly callback: koffi.IKoffiRegisteredCallback;
  private pending: Buffer[] = [];

  /** `mapFd` stays the caller's: libbpf maps the buffer's pages and keeps no ownership of the fd. */
  constructor(mapFd: number, what: string) {
    this.callback = koffi.register(
      (_ctx: unknown, data: unknown, size: number | bigint): number => {
        try {
          this.pending.push(Buffer.from(new Uint8Array(koffi.view(data, Number(size)))));
        } catch {
          // never throw into C
        }
        return 0;
      },
      koffi.pointer(SampleFn),
    );
    const h: unknown = ringBufferNew(mapFd, this.callback, null, null);
    if (!h) {
      koffi.unregister(this.callback);
      throw new BpfError('ring_buffer__new', koffi.errno(), what);
    }
    this.handle = h;
  }

  /** Every record written since the last call, oldest first; never blocks. */
  consume(): Buffer[] {
    if (!this.handle) throw new Error('ring buffer is closed');
    const rc = ringBufferConsume(this.handle) as number;
    const out = this.pending;
    this.pending = [];
    if (rc < 0) throw new BpfError('ring_buffer__consume', -rc, 'ring buffer');
    return out;
  }

  close(): void {
    if (!this.handle) return;
    ringBufferFree(this.handle);
    this.handle = undefined;
    koffi.unregister(this.callback);
  }
}
