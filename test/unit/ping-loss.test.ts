import { describe, expect, it } from 'vitest';
import { countLoss, lossLine, pingerResult, type PingerResult } from '../support/lab-session.js';

/** A pinger's result: `n` packets every 20 ms from t = 1000 ms, answered 1 ms later unless in `lost`. */
const result = (n: number, lost: number[] = []): PingerResult => ({
  target: '10.244.2.2',
  intervalMs: 20,
  graceMs: 1500,
  packets: Array.from({ length: n }, (_, seq) => [seq, 1000 + 20 * seq, lost.includes(seq) ? null : 1001 + 20 * seq]),
});
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

describe('countLoss: what the flows in the lab tests count as lost', () => {
  it('counts nothing when every packet was answered, and a gap in the middle', () => {
    expect(countLoss(result(100), 1500)).toEqual({ sent: 100, lost: 0, sentAfterLastFault: 75, lostAfterLastFault: 0, lostSentAt: [] });
    expect(countLoss(result(100, [3, 4]), 1500)).toMatchObject({ lost: 2, lostAfterLastFault: 0, lostSentAt: [1060, 1080] });
  });

  it('counts the last packets unanswered: the pinger waited for their replies, so a short outage at the very end is loss (ping stopped by SIGINT left it in flight, and it was forgiven)', () => {
    // 300 ms blackhole just before the stop: the last 15 of 100 never answered.
    const r = countLoss(result(100, range(85, 100)), 1000 + 20 * 85);
    expect(r).toMatchObject({ sent: 100, lost: 15, sentAfterLastFault: 15, lostAfterLastFault: 15 });
    expect(Math.min(...r.lostSentAt)).toBe(2700);
    expect(Math.max(...r.lostSentAt)).toBe(2980);
    // A single unanswered last packet is lost too.
    expect(countLoss(result(100, [99]), 0).lost).toBe(1);
  });

  it('separates the loss after the last fault from the loss before it', () => {
    const r = countLoss(result(200, [10, 11, 150]), 1000 + 20 * 100);
    expect(r).toMatchObject({ sent: 200, lost: 3, sentAfterLastFault: 100, lostAfterLastFault: 1 });
    expect(lossLine(r)).toBe('3 of 200 packets lost (1 of 100 after the last fault)');
  });

  it("reads the pinger's result line out of its output", () => {
    const r = result(3, [2]);
    expect(pingerResult(`first reply\n${JSON.stringify(r)}\n`)).toEqual(r);
    expect(pingerResult('first reply\n')).toBeUndefined();
  });
});
