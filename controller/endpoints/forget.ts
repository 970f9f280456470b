import { existsSync } from 'node:fs';
import { DatapathMaps } from '../dataplane/datapath-maps.js';

/** Removes one pod's twill_endpoints entry through the pins (the CNI plugin's DEL). */
export function forgetEndpointEntry(pinDir: string, ip: string): void {
  if (!existsSync(`${pinDir}/twill_endpoints`)) return;
  const maps = DatapathMaps.open(pinDir);
  try {
    maps.endpoints?.delete({ ip });
  } finally {
    maps.close();
  }
}
