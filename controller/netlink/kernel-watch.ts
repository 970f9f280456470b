import { spawn, type ChildProcess } from 'node:child_process';
import type { Logger } from '../util/log.js';

interface KernelWatchOptions {
  /** the sync this drives; it reports its own errors */
  work: () => Promise<void>;
  /** `ip monitor` objects whose events request a sync (link, neigh, route, ...) */
  monitor: readonly string[];
  /** full re-sync period: a missed event is repaired by the next one */
  resyncMs: number;
  /** how long a burst of events is gathered into one sync */
  debounceMs?: number;
  log: Logger;
}

/**
 * Runs one sync of kernel state into the maps at a time: at start, on each burst of `ip monitor`
 * events, on request, and every resyncMs. A request made while a sync runs makes exactly one
 * more run after it, so the last change is always seen.
 */
export class KernelWatch {
  private running?: Promise<void>;
  private again = false;
  private monitor?: ChildProcess;
  private timer?: NodeJS.Timeout;
  private debounce?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly o: KernelWatchOptions) {}

  /** One sync now (joined with one already running, then repeated once if asked for meanwhile). */
  async run(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.o.work();
      } while (this.again && !this.stopped);
    })().finally(() => (this.running = undefined));
    return this.running;
  }

  /** Coalesces a burst of events into one sync. */
  request(): void {
    if (this.stopped) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.run(), this.o.debounceMs ?? 20);
  }

  start(): void {
    this.startMonitor();
    this.timer = setInterval(() => this.request(), this.o.resyncMs);
    this.timer.unref();
  }

  private startMonitor(): void {
    if (this.stopped) return;
    const objects = this.o.monitor.join(' ');
    const child = spawn('ip', ['-o', 'monitor', ...this.o.monitor], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout.on('data', () => this.request());
    child.on('error', () => undefined);
    child.on('exit', () => {
      if (this.stopped) return;
      this.o.log.warn(`ip monitor ${objects} exited; restarting it in a second`);
      setTimeout(() => this.startMonitor(), 1000).unref();
    });
    child.unref();
    this.monitor = child;
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.debounce);
    this.monitor?.kill();
  }
}
