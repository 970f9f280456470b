/**
 * Pure: which twill_peer_stats slot each peer counts into. A peer keeps its slot for as long
 * as it stays (its counters must not jump); a new peer gets the lowest slot nobody holds.
 * Slots held by peers that leave in the same sync are not reused by it: the departing
 * peer's twill_subnets entry may still point there until the sync has removed it.
 */
export interface SlotAssignment {
  /** PublicIP -> slot, for every wanted peer (0 when the array is full) */
  slots: Map<string, number>;
  /** slots given out by this assignment: their counters must be zeroed before use */
  fresh: number[];
  /** peers left without a slot because every slot is taken */
  unslotted: string[];
}

/**
 * @param held  what the maps hold now, PublicIP -> slot (0: none)
 * @param wanted  the PublicIPs the next sync writes
 * @param capacity  entries of the per-CPU array; slot `reserved` (0) is never given out
 */
export function assignStatsSlots(held: ReadonlyMap<string, number>, wanted: Iterable<string>, capacity: number, reserved = 0): SlotAssignment {
  const taken = new Set<number>([reserved]);
  const slots = new Map<string, number>();
  const wantedList = [...wanted];
  const wantedSet = new Set(wantedList);
  // Keep every valid slot first; of two peers claiming one slot (a map written by hand), the first keeps it.
  for (const [ip, slot] of held) {
    if (slot === reserved || slot >= capacity || taken.has(slot)) continue;
    taken.add(slot);
    if (wantedSet.has(ip)) slots.set(ip, slot);
  }
  const fresh: number[] = [];
  const unslotted: string[] = [];
  let next = 0;
  for (const ip of wantedList) {
    if (slots.has(ip)) continue;
    while (next < capacity && taken.has(next)) next++;
    if (next >= capacity) {
      slots.set(ip, reserved);
      unslotted.push(ip);
      continue;
    }
    taken.add(next);
    slots.set(ip, next);
    fresh.push(next);
  }
  return { slots, fresh, unslotted };
}

/**
 * assignStatsSlots' rules kept one change at a time, for the writes between full syncs: the
 * cost is the number of peers that come and go, not the number of peers (thousands).
 */
export class StatsSlotTable {
  private readonly taken = new Set<number>();
  private lowestFree = 0;

  /** @param slots  PublicIP -> slot, as a full assignment left it; owned and kept current from here on */
  constructor(
    readonly slots: Map<string, number>,
    private readonly capacity: number,
    private readonly reserved = 0,
  ) {
    this.taken.add(reserved);
    for (const s of slots.values()) this.taken.add(s);
  }

  /** New peers take the lowest free slots; departing peers' slots are freed only after, so one write never reuses them. */
  change(added: Iterable<string>, removed: Iterable<string>): Pick<SlotAssignment, 'fresh' | 'unslotted'> {
    const fresh: number[] = [];
    const unslotted: string[] = [];
    for (const ip of added) {
      if (this.slots.has(ip)) continue;
      while (this.lowestFree < this.capacity && this.taken.has(this.lowestFree)) this.lowestFree++;
      if (this.lowestFree >= this.capacity) {
        this.slots.set(ip, this.reserved);
        unslotted.push(ip);
        continue;
      }
      this.taken.add(this.lowestFree);
      this.slots.set(ip, this.lowestFree);
      fresh.push(this.lowestFree);
    }
    for (const ip of removed) {
      const s = this.slots.get(ip);
      if (s === undefined) continue;
      this.slots.delete(ip);
      if (s === this.reserved) continue;
      this.taken.delete(s);
      this.lowestFree = Math.min(this.lowestFree, s);
    }
    return { fresh, unslotted };
  }
}
