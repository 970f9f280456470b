import { describe, expect, it } from 'vitest';
import { pingLoss } from '../support/lab-session.js';

const reply = (seq: number) => `64 bytes from 10.244.2.2: icmp_seq=${seq} ttl=62 time=0.2 ms`;
const run = (answered: number[], extra: string[] = []) => [...answered.map(reply), ...extra].join('\n');

describe('pingLoss: what the flows in the lab tests count as lost', () => {
  it('counts a gap that a later reply closes, and not the reply still in flight when ping was stopped', () => {
    expect(pingLoss(run([1, 2, 3, 4]), 5)).toBe(0);
    expect(pingLoss(run([1, 3, 4]), 5)).toBe(1);
  });

  it('counts a whole unanswered tail longer than a second of pings (an outage at the end), and an error reply as no answer', () => {
    const answered = Array.from({ length: 10 }, (_, i) => i + 1);
    expect(pingLoss(run(answered), 70)).toBe(60);
    expect(pingLoss(run([1, 3], ['From 10.244.1.1 icmp_seq=2 Destination Host Unreachable']), 3)).toBe(1);
  });
});
