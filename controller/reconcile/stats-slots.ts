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
