/*
 * Pure: which peers a node can reach directly over its underlay, as the reconciler decides what
 * to program. The routes themselves are looked up by controller/dataplane/direct-routes.ts.
 */

/** How this node reaches a peer's PublicIP. */
export type UnderlayRoute = { kind: 'direct'; dev?: string } | { kind: 'routed'; gateway: string; dev?: string } | { kind: 'unreachable'; error: string };

/** Why host-gw cannot carry a peer, in the words of flannel's failed route add; undefined if it can. */
export function hostGwRefusal(subnet: string, publicIp: string, route: UnderlayRoute | undefined): string | undefined {
  if (route?.kind === 'direct') return undefined;
  const how = !route
    ? 'its route is not known yet'
    : route.kind === 'routed'
      ? `the route to it goes via gateway ${route.gateway}`
      : `no route to it (${route.error})`;
  return `Error adding route to ${subnet} via ${publicIp}: not on our L2 segment (${how}); host-gw needs direct layer 2 connectivity between nodes`;
}
