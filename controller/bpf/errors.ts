import { ENOTSUPP } from './errno.js';
import { raw } from './libbpf-raw.js';

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
export function check(rc: number, fn: string, context: string): number {
  if (rc < 0) throw new BpfError(fn, -rc, context);
  return rc;
}
