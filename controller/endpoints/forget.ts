import { existsSync } from 'node:fs';
import { BpfMap } from '../bpf/libbpf.js';
import type { FieldKind, StructCodec } from '../../maps/codec.js';
import { mapSpecs } from '../../maps/layout.js';
import { TypedMap } from '../../maps/typed-map.js';

/*
 * Removes one pod's twill_endpoints entry (and its twill_endpoints6 one) through the pins (the
 * CNI plugin's DEL). Only those two pins are opened, not the node's whole map set: this runs once
 * per deleted pod, in a process that starts for it.
 */
export function forgetEndpointEntry(pinDir: string, ip: string | undefined, ip6?: string): void {
  if (!existsSync(`${pinDir}/twill_endpoints`)) return;
  // An IPv6-only pod has no IPv4 entry.
  if (ip) deleteThroughPin(`${pinDir}/twill_endpoints`, mapSpecs.twill_endpoints, { ip });
  // A datapath attached by a build before IPv6 has no twill_endpoints6.
  if (ip6 && existsSync(`${pinDir}/twill_endpoints6`)) deleteThroughPin(`${pinDir}/twill_endpoints6`, mapSpecs.twill_endpoints6, { ip6 });
}

function deleteThroughPin<KF extends Record<string, FieldKind>, VF extends Record<string, FieldKind>>(
  pinPath: string,
  spec: { key: StructCodec<KF>; value: StructCodec<VF> },
  key: Parameters<TypedMap<KF, VF>['delete']>[0],
): void {
  const map = BpfMap.fromPin(pinPath);
  try {
    new TypedMap(map, spec.key, spec.value).delete(key);
  } finally {
    map.close();
  }
}
