import { describe, expect, it } from 'vitest';
import { assignStatsSlots } from '../../controller/reconcile/stats-slots.js';

describe('per-peer counter slots', () => {
  it('gives new peers the lowest free slots, never slot 0, and marks them fresh', () => {
    const a = assignStatsSlots(new Map(), ['10.0.0.2', '10.0.0.3'], 8);
    expect([...a.slots]).toEqual([
      ['10.0.0.2', 1],
      ['10.0.0.3', 2],
    ]);
    expect(a.fresh).toEqual([1, 2]);
    expect(a.unslotted).toEqual([]);
  });

  it('keeps the slot of a peer that stays, so its counters do not jump', () => {
    const a = assignStatsSlots(
      new Map([
        ['10.0.0.2', 5],
        ['10.0.0.3', 1],
      ]),
      ['10.0.0.3', '10.0.0.2', '10.0.0.4'],
      8,
    );
    expect(a.slots.get('10.0.0.2')).toBe(5);
    expect(a.slots.get('10.0.0.3')).toBe(1);
    expect(a.slots.get('10.0.0.4')).toBe(2);
    expect(a.fresh).toEqual([2]);
  });

  it('does not hand a departing peer slot to a newcomer in the same sync', () => {
    const a = assignStatsSlots(new Map([['10.0.0.2', 1]]), ['10.0.0.9'], 8);
    expect(a.slots.get('10.0.0.9')).toBe(2);
    expect(a.slots.has('10.0.0.2')).toBe(false);
  });

  it('re-slots entries written without a slot, out of range, or sharing one', () => {
    const a = assignStatsSlots(
      new Map([
        ['10.0.0.2', 0],
        ['10.0.0.3', 99],
        ['10.0.0.4', 1],
        ['10.0.0.5', 1],
      ]),
      ['10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5'],
      8,
    );
    expect(a.slots.get('10.0.0.4')).toBe(1);
    expect(new Set(a.slots.values()).size).toBe(4);
    expect(a.fresh.sort()).toEqual([2, 3, 4]);
  });

  it('leaves peers on the unattributed slot when every slot is taken', () => {
    const a = assignStatsSlots(new Map([['10.0.0.2', 1]]), ['10.0.0.2', '10.0.0.3', '10.0.0.4'], 3);
    expect(a.slots.get('10.0.0.3')).toBe(2);
    expect(a.slots.get('10.0.0.4')).toBe(0);
    expect(a.unslotted).toEqual(['10.0.0.4']);
    expect(a.fresh).toEqual([2]);
  });
});
