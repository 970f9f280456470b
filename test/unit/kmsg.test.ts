import { describe, expect, it } from 'vitest';
import { kernelLogCursor, kernelLogSince, markKernelLog, parseKmsgRecord } from '../support/kmsg.js';

describe('the kernel log read by sequence number', () => {
  it('parses a record and its continuation', () => {
    expect(parseKmsgRecord('6,1234,5678901,-;twill: hello\n SUBSYSTEM=net\n')).toEqual({ seq: 1234, text: 'twill: hello' });
    expect(parseKmsgRecord('6,7,1,c,more;x')).toEqual({ seq: 7, text: 'x' });
    expect(parseKmsgRecord('garbage')).toBeUndefined();
  });

  it('sees a line logged after the cursor and none logged before it, however full the ring buffer is', () => {
    const tag = `twill-kmsg-${process.pid}-${Date.now()}`;
    markKernelLog(`${tag} before`);
    const cursor = kernelLogCursor();
    markKernelLog(`${tag} after`);
    const since = kernelLogSince(cursor).filter((l) => l.includes(tag));
    expect(since).toEqual([`${tag} after`]);
  });
});
