import { describe, expect, it } from 'vitest';
import { StatsSlotTable, assignStatsSlots } from '../../controller/reconcile/stats-slots.js';

describe('StatsSlotTable', () => {
  it('gives the same slots as a full assignment after every change of a random sequence', () => {
    let seed = 7;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
    const capacity = 12; // 11 usable slots for a pool of 11 addresses: the table fills up and slots get reused
    const table = new StatsSlotTable(new Map(), capacity, 0);
    let held = new Map<string, number>();
    for (let step = 0; step < 300; step++) {
      const present = [...table.slots.keys()];
      const removed = present.filter(() => rnd() < 0.2);
      const added = Array.from({ length: Math.floor(rnd() * 4) }, () => `10.0.0.${Math.floor(rnd() * 11)}`).filter(
        (ip, i, a) => !table.slots.has(ip) && a.indexOf(ip) === i,
      );
      const wanted = [...present.filter((ip) => !removed.includes(ip)), ...added];
      const full = assignStatsSlots(held, wanted, capacity, 0);
      const got = table.change(added, removed);
      expect(new Map(table.slots)).toEqual(full.slots);
      expect(got.fresh).toEqual(full.fresh);
      expect(got.unslotted).toEqual(full.unslotted);
      held = full.slots;
    }
    expect(held.size).toBeGreaterThan(0);
  });

  it('leaves peers beyond capacity unattributed until a full assignment, and never reuses a slot freed in the same change', () => {
    const table = new StatsSlotTable(
      new Map([
        ['10.0.0.1', 1],
        ['10.0.0.2', 2],
      ]),
      3,
      0,
    );
    const got = table.change(['10.0.0.3'], ['10.0.0.1']);
    expect(got).toEqual({ fresh: [], unslotted: ['10.0.0.3'] });
    expect(table.slots.get('10.0.0.3')).toBe(0);
    expect(table.change(['10.0.0.4'], [])).toEqual({ fresh: [1], unslotted: [] });
  });
});
