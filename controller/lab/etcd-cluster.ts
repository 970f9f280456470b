import { run } from '../util/exec.js';
import { hostIn } from './addressing.js';
import { isEtcd, startEtcd, stopEtcd } from './etcd.js';
import { attachToUnderlay } from './namespaces.js';
import type { LabOptions } from './options.js';
import { labStateDir, saveState, type LabState } from './state.js';

/*
 * The lab's etcd: one member, or three for a cluster that survives losing one, each in its own
 * namespace on the underlay; flannel's network config in it; and the stops and starts the tests
 * use to take etcd, or a member, away.
 */

const ETCD_PREFIX = '/coreos.com/network';
/** etcd's registered ports, on each member's own address */
const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;

function etcdOptions(name: string, host: string, member = 1) {
  const id = member === 1 ? 'etcd' : `etcd${member}`;
  return {
    name: `${name}-${id}`,
    host,
    clientPort: ETCD_CLIENT_PORT,
    peerPort: ETCD_PEER_PORT,
    dataDir: `${labStateDir(name)}/${id}/data`,
    logFile: `${labStateDir(name)}/${id}/etcd.log`,
    netns: `${name}-${id}`,
  };
}

/** Starts the members, records them, and writes the network config; returns what to tell the user. */
export async function startLabEtcdCluster(state: LabState, o: LabOptions): Promise<string> {
  // Member i listens at .(251-i) in namespace <lab>-etcd (the first) or <lab>-etcd<i>.
  const members = Array.from({ length: o.etcdMembers }, (_, i) => etcdOptions(o.name, hostIn(o.underlayCidr, 250 - i), i + 1));
  const initialCluster = o.etcdMembers > 1 ? members.map((m) => `${m.name}=http://${m.host}:${m.peerPort}`).join(',') : undefined;
  for (const [i, m] of members.entries()) await attachToUnderlay(state, m.netns, i === 0 ? 'etcd' : `etcd${i + 1}`, m.host, o.mtu);
  // Together: a cluster member is healthy only once a quorum has started.
  const started = await Promise.all(members.map((m) => startEtcd({ ...m, initialCluster })));
  state.etcd = { ...started[0], prefix: ETCD_PREFIX };
  if (o.etcdMembers > 1) state.etcdMembers = started;
  saveState(state);
  const configNote = await ensureNetworkConfig(state, o);
  return `etcd ${started.map((e) => e.endpoint).join(', ')} in ${members.map((m) => m.netns).join(', ')} (${configNote})`;
}

/** Every member still running is stopped (labDown). */
export async function stopLabEtcdCluster(state: LabState): Promise<void> {
  for (const e of state.etcdMembers ?? (state.etcd ? [state.etcd] : [])) if (isEtcd(e)) await stopEtcd(e);
}

/** Stops member `index` (0-based) of the lab's etcd cluster, data kept; tests take members away. */
export async function stopLabEtcdMember(state: LabState, index: number): Promise<void> {
  await stopEtcd(state.etcdMembers![index]);
}

/** Starts a stopped cluster member again; it rejoins with its data. */
export async function startLabEtcdMember(state: LabState, index: number): Promise<void> {
  const members = state.etcdMembers!;
  const initialCluster = members.map((m, i) => `${etcdOptions(state.name, '', i + 1).name}=http://${new URL(m.endpoint).hostname}:${ETCD_PEER_PORT}`).join(',');
  members[index] = await startEtcd({ ...etcdOptions(state.name, new URL(members[index].endpoint).hostname, index + 1), initialCluster });
  if (index === 0) state.etcd = { ...members[0], prefix: state.etcd!.prefix };
  saveState(state);
}

/** Stops the lab's etcd (data kept); tests use it to show the datapath does not depend on etcd. */
export async function stopLabEtcd(state: LabState): Promise<void> {
  if (state.etcd) await stopEtcd(state.etcd);
}

export async function startLabEtcd(state: LabState): Promise<void> {
  const host = new URL(state.etcd!.endpoint).hostname;
  state.etcd = { ...(await startEtcd(etcdOptions(state.name, host))), prefix: state.etcd!.prefix };
  saveState(state);
}

function etcdctl(state: LabState, args: string[], input?: string) {
  return run(['etcdctl', '--endpoints', state.etcd!.endpoint, ...args], { netns: state.etcd!.netns, input, env: { ...process.env, ETCDCTL_API: '3' } });
}

/** flannel's network config for the lab's options: what goes into etcd, or into net-conf.json in Kubernetes mode. */
export function networkConfigOf(o: LabOptions): object {
  const backend = o.backend === 'vxlan' && o.directRouting ? { Type: 'vxlan', DirectRouting: true } : { Type: o.backend };
  const v4 = o.ipFamily !== 'ipv6' ? { Network: o.network, SubnetLen: o.subnetLen } : { EnableIPv4: false };
  const v6 = o.ipFamily !== 'ipv4' ? { EnableIPv6: true, IPv6Network: o.ipv6Network, IPv6SubnetLen: 64 } : {};
  return { ...v4, ...v6, Backend: backend };
}

/** Writes flannel's network config unless one is there already (the lab never overwrites it). */
async function ensureNetworkConfig(state: LabState, o: LabOptions): Promise<string> {
  const key = `${ETCD_PREFIX}/config`;
  if ((await etcdctl(state, ['get', '--print-value-only', key])).stdout.trim()) return 'network config present';
  await etcdctl(state, ['put', key], JSON.stringify(networkConfigOf(o)));
  const nets = [o.ipFamily !== 'ipv6' && `${o.network}, /${o.subnetLen} per node`, o.ipFamily !== 'ipv4' && `${o.ipv6Network}, /64 per node`]
    .filter(Boolean)
    .join(' and ');
  return `network config written: ${nets}, ${o.backend}${o.directRouting ? ' with DirectRouting' : ''}`;
}
