import { existsSync } from 'node:fs';
import { DatapathMaps } from '../dataplane/datapath-maps.js';
import { DatapathMaps6 } from '../dataplane/datapath-maps6.js';

/** Removes one pod's twill_endpoints entry (and its twill_endpoints6 one) through the pins (the CNI plugin's DEL). */
export function forgetEndpointEntry(pinDir: string, ip: string | undefined, ip6?: string): void {
  if (!existsSync(`${pinDir}/twill_endpoints`)) return;
  if (ip) {
    const maps = DatapathMaps.open(pinDir);
    try {
      maps.endpoints?.delete({ ip });
    } finally {
      maps.close();
    }
  }
  if (!ip6 || !DatapathMaps6.present(pinDir)) return;
  const maps6 = DatapathMaps6.open(pinDir);
  try {
    maps6.deleteEndpoint(ip6);
  } finally {
    maps6.close();
  }
}
