import { randomBytes } from 'node:crypto';

/** Bits of a MAC's first octet (IEEE 802): group (multicast) and locally administered. */
const MAC_GROUP_BIT = 0x01;
const MAC_LOCAL_BIT = 0x02;

/** Random, unicast, locally administered: what flannel gives flannel.1. */
export function randomVtepMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0] & ~MAC_GROUP_BIT) | MAC_LOCAL_BIT;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
