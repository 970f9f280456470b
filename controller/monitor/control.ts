import { existsSync, readFileSync, statSync } from 'node:fs';
import { BpfMap } from '../bpf/libbpf.js';
import type { FieldsOf } from '../../maps/codec.js';
import { mapSpecs, type monitorStruct, type MonitorControl, type u32Key } from '../../maps/layout.js';
import { TypedMap } from '../../maps/typed-map.js';
import { logger } from '../util/log.js';

/*
 * twill_monitor, the switch the programs read before they write an event. Only `twill monitor`
 * turns it on, naming itself as its owner (pid and start time); it turns it off when it ends. A
 * monitor killed with SIGKILL cannot, so whoever looks next (the agent every few seconds, the next
 * monitor at its start) and finds the owner gone turns it off.
 */

const log = logger('monitor');

export const monitorPin = (pinDir: string) => `${pinDir}/twill_monitor`;

/** Field 22 of /proc/<pid>/stat (clock ticks after boot), or undefined when there is no such process. */
export function processStart(pid: number): bigint | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const start = fields[22 - 3];
  return start === undefined ? undefined : BigInt(start);
}

/** The inode of this process's pid namespace: a pid names a process only within one. */
export function pidNamespace(): number {
  return statSync('/proc/self/ns/pid').ino;
}

/**
 * Pure: whether the monitor named in `c` may still be the process that set it. An owner in another
 * pid namespace (a monitor run on the host while the agent runs in a container) cannot be looked
 * up from here, so it counts as alive: only a process that can see it clears it.
 */
export const ownerAlive = (c: MonitorControl, ownPidns: number, startOf: (pid: number) => bigint | undefined) =>
  c.owner_pid !== 0 && (c.owner_pidns !== ownPidns || startOf(c.owner_pid) === c.owner_start);

export class MonitorSwitch {
  private constructor(private readonly map: TypedMap<FieldsOf<typeof u32Key>, FieldsOf<typeof monitorStruct>>) {}

  /** undefined when the datapath under pinDir was attached by a build without twill monitor. */
  static open(pinDir: string): MonitorSwitch | undefined {
    if (!existsSync(monitorPin(pinDir))) return undefined;
    return new MonitorSwitch(new TypedMap(BpfMap.fromPin(monitorPin(pinDir)), mapSpecs.twill_monitor.key, mapSpecs.twill_monitor.value));
  }

  read(): MonitorControl {
    return this.map.get({ index: 0 })!;
  }

  write(c: MonitorControl): void {
    this.map.put({ index: 0 }, c);
  }

  /** Turns events off, keeping the lost counter. */
  off(): void {
    this.write({ ...this.read(), flags: 0, trace_sample: 0, owner_pid: 0, owner_pidns: 0, owner_start: 0n });
  }

  close(): void {
    this.map.map.close();
  }
}

/**
 * Turns off what a monitor that is gone left on. Returns the pid it had, or undefined when there
 * was nothing to clear (off, a live owner, or no twill_monitor pinned).
 */
export function clearAbandonedMonitor(pinDir: string, startOf = processStart, ownPidns = pidNamespace()): number | undefined {
  const sw = MonitorSwitch.open(pinDir);
  if (!sw) return undefined;
  try {
    const c = sw.read();
    if (c.flags === 0 || ownerAlive(c, ownPidns, startOf)) return undefined;
    sw.off();
    log.warn('a twill monitor ended without turning events off: turned them off', { pid: c.owner_pid, pinDir });
    return c.owner_pid;
  } finally {
    sw.close();
  }
}
