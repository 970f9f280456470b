import { closeSync, constants, openSync, readSync, writeFileSync } from 'node:fs';

/*
 * The kernel log by /dev/kmsg sequence number. A slice of `dmesg` by line count goes blind once
 * the ring buffer is full (the count stops growing while old lines fall off the front); sequence
 * numbers only grow, so "every record after N" is exact whatever the buffer holds.
 */

export interface KernelRecord {
  seq: number;
  text: string;
}

/** Every record still in the ring buffer, oldest first. */
function readAll(): KernelRecord[] {
  const fd = openSync('/dev/kmsg', constants.O_RDONLY | constants.O_NONBLOCK);
  const buf = Buffer.alloc(16384);
  const out: KernelRecord[] = [];
  try {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') return out;
        // Records overwritten while we read: the reader skips to the oldest one left.
        if (code === 'EPIPE') continue;
        throw err;
      }
      const parsed = parseKmsgRecord(buf.toString('utf8', 0, n));
      if (parsed) out.push(parsed);
    }
  } finally {
    closeSync(fd);
  }
}

/** Pure: one /dev/kmsg record, "prio,seq,usec,flags[,...];text\n[ continuation lines]". */
export function parseKmsgRecord(record: string): KernelRecord | undefined {
  const m = /^\d+,(\d+),\d+,[^;]*;([^\n]*)/.exec(record);
  return m ? { seq: Number(m[1]), text: m[2] } : undefined;
}

/** The newest record's sequence number: records logged from now on have a greater one. */
export function kernelLogCursor(): number {
  const all = readAll();
  return all.length ? all[all.length - 1].seq : -1;
}

/** What the kernel logged after `cursor`. */
export function kernelLogSince(cursor: number): string[] {
  return readAll()
    .filter((r) => r.seq > cursor)
    .map((r) => r.text);
}

/** Writes a line into the kernel log (root): a marker the reader must find, so it is known not to be blind. */
export function markKernelLog(text: string): void {
  writeFileSync('/dev/kmsg', `${text}\n`);
}
