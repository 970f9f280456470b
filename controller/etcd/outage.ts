import { isRecoverableError } from 'etcd3';

/*
 * While etcd cannot be reached, the client's own errors say little and say it often: one call
 * fails with ECONNREFUSED or a deadline, the next ones with cockatiel's "circuit breaker is open",
 * in turn, retried every second or so. An operator needs one thing from them: which endpoints are
 * unreachable and since when. Pure: errors and times in, at most one log line out.
 */

const UNREACHABLE =
  /circuit breaker is open|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|ECONNRESET|No connection established|deadline exceeded|no answer within|UNAVAILABLE/i;
const BREAKER = /circuit breaker is open/i;

/** Whether the error says etcd could not be reached (rather than that it answered no). */
export function isUnreachable(err: unknown): boolean {
  return err instanceof Error && (isRecoverableError(err) || UNREACHABLE.test(err.message));
}

interface OutageLine {
  level: 'warn' | 'info';
  msg: string;
  fields: Record<string, unknown>;
}

export class EtcdOutage {
  private since: number | undefined;
  private lastSaid = 0;
  private cause = '';

  constructor(
    private readonly endpoints: readonly string[],
    private readonly repeatMs = 30_000,
  ) {}

  get down(): boolean {
    return this.since !== undefined;
  }

  /** A call failed; the line to log, if any: at the start, then at most once per repeatMs. */
  failed(err: Error, now: number): OutageLine | undefined {
    // The breaker's message hides the cause the breaker opened on: keep the cause.
    if (!BREAKER.test(err.message) || !this.cause) this.cause = err.message.split('\n')[0];
    if (this.since === undefined) {
      this.since = now;
      this.lastSaid = now;
      return this.line('warn', 'etcd unreachable', now);
    }
    if (now - this.lastSaid < this.repeatMs) return undefined;
    this.lastSaid = now;
    return this.line('warn', 'etcd still unreachable', now);
  }

  /** A call succeeded; one line if that ends an outage. */
  succeeded(now: number): OutageLine | undefined {
    if (this.since === undefined) return undefined;
    const line: OutageLine = {
      level: 'info',
      msg: 'etcd reachable again',
      fields: { endpoints: this.endpoints.join(','), downForS: Math.round((now - this.since) / 1000) },
    };
    this.since = undefined;
    this.cause = '';
    return line;
  }

  private line(level: OutageLine['level'], msg: string, now: number): OutageLine {
    return {
      level,
      msg,
      fields: {
        endpoints: this.endpoints.join(','),
        since: new Date(this.since!).toISOString(),
        forS: Math.round((now - this.since!) / 1000),
        cause: this.cause,
      },
    };
  }
}
