import type { Backend, DecapHook } from '../config/choices.js';
import { LabError } from '../lab/errors.js';
import { labDown, labUp } from '../lab/lab.js';
import type { LabOptions } from '../lab/options.js';
import { addLabPod, removeLabPod } from '../lab/pods.js';
import { labStatus, type LabState } from '../lab/state.js';
import { parseArgs, requireOpts, UsageError } from './args.js';
import { labNameOpt as nameOpt, labPodOpts as podOpts, labStatusOpts, labUpOpts as upOpts } from './options.js';
import { runDemo } from './lab-demo.js';

export async function labCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const progress = (msg: string) => console.error(msg);
  try {
    switch (sub) {
      case 'up': {
        const o = parseArgs(rest, upOpts);
        const started = Date.now();
        const state = await labUp(
          {
            name: o.name,
            nodes: o.nodes,
            podsPerNode: o['pods-per-node'],
            kernelNodes: o['kernel-nodes'],
            flanneldNodes: o['flanneld-nodes'],
            imageNodes: o['image-nodes'],
            image: o.image,
            kube: o.kube,
            ipMasq: o['ip-masq'] as LabOptions['ipMasq'],
            network: o.network,
            subnetLen: o['subnet-len'],
            underlayCidr: o.underlay,
            etcdMembers: o['etcd-members'] as 1 | 3,
            fastPath: o['fast-path'],
            decapHook: o['decap-hook'] as DecapHook,
            backend: o.backend as Backend,
            directRouting: o['direct-routing'],
            routedNodes: o['routed-nodes'],
            ipFamily: o['ip-family'] as LabOptions['ipFamily'],
            ipv6Network: o['ipv6-network'],
          },
          progress,
        );
        console.error(
          `lab ${state.name} up in ${((Date.now() - started) / 1000).toFixed(1)} s: etcd ${state.etcd!.endpoint}, ${nodeKinds(state)}, ${state.pods.length} pods`,
        );
        console.error(`next: twill lab demo --name ${state.name} | twill lab status --name ${state.name} | twill lab down --name ${state.name}`);
        return 0;
      }
      case 'down': {
        const o = parseArgs(rest, nameOpt);
        await labDown(o.name, progress);
        return 0;
      }
      case 'status': {
        const o = parseArgs(rest, labStatusOpts);
        const state = await labStatus(o.name);
        if (!state) throw new UsageError(`--name ${o.name}: no such lab`);
        printStatus(state, o.json);
        return 0;
      }
      case 'pod': {
        // twill lab pod add --node n1 [--ip A] | twill lab pod del NAME
        const [verb, ...args] = rest;
        // del takes --name only: the pod's node is in the lab's state.
        const o = parseArgs(args, verb === 'del' ? nameOpt : podOpts) as ReturnType<typeof parseArgs<typeof podOpts>>;
        if (verb === 'add') requireOpts(o, podOpts);
        const state = await labStatus(o.name);
        if (!state) throw new UsageError(`--name ${o.name}: no such lab`);
        if (verb === 'add') {
          const pod = await addLabPod(state, o.node, { ip: o.ip || undefined });
          console.log(`pod ${pod.name}: ${pod.ip} on ${pod.node} (netns ${pod.netns})`);
        } else if (verb === 'del' && o._.length === 1) {
          await removeLabPod(state, o._[0]);
          console.log(`pod ${o._[0]} removed`);
        } else throw new UsageError('twill lab pod: expected `add --node N [--ip A]` or `del NAME`');
        return 0;
      }
      case 'demo': {
        const o = parseArgs(rest, nameOpt);
        const state = await labStatus(o.name);
        if (!state) throw new UsageError(`--name ${o.name}: no such lab; run \`twill lab up --nodes 3\` first`);
        return runDemo(state);
      }
      default:
        throw new UsageError(`twill lab: unknown subcommand ${sub ?? '(none)'}; expected up, down, status, demo or pod`);
    }
  } catch (err) {
    if (err instanceof LabError) throw new UsageError(err.message);
    throw err;
  }
}

function nodeKinds(state: LabState): string {
  const count = (d: LabState['nodes'][number]['dataplane']) => state.nodes.filter((n) => n.dataplane === d).length;
  const flanneld = count('flanneld');
  const agents = state.nodes.length - flanneld;
  return [
    agents && `${agents} node${agents === 1 ? '' : 's'} running twill agent`,
    flanneld && `${flanneld} running flanneld ${state.nodes.find((n) => n.flanneldVersion)?.flanneldVersion ?? ''}`.trim(),
  ]
    .filter(Boolean)
    .join(', ');
}

function printStatus(state: LabState, json: boolean): void {
  if (json) {
    const doc = {
      name: state.name,
      network: state.network,
      backend: state.backend ?? 'vxlan',
      directRouting: state.directRouting ?? false,
      ipFamily: state.ipFamily ?? 'ipv4',
      ipv6Network: state.ipv6Network,
      underlay: state.underlay,
      underlay6: state.underlay6,
      routedSegment: state.routedSegment,
      etcd: state.etcd && { netns: state.etcd.netns, endpoint: state.etcd.endpoint, prefix: state.etcd.prefix, pid: state.etcd.pid },
      kube: state.kube && {
        apiserver: state.kube.apiserver,
        kubeconfig: state.kube.kubeconfig,
        adminKubeconfig: state.kube.adminKubeconfig,
        netns: state.kube.netns,
      },
      nodes: state.nodes.map((n) => ({
        name: n.name,
        dataplane: n.dataplane,
        flanneldVersion: n.flanneldVersion,
        image: n.image,
        netns: n.netns,
        underlayIp: n.underlayIp,
        underlayIp6: n.underlayIp6,
        subnet: n.subnet,
        subnet6: n.subnet6,
        vtepMac: n.vtepMac,
        vtepMac6: n.vtepMac6,
        pinDir: n.pinDir,
        iface: n.iface,
        subnetFile: n.subnetFile,
        agent: n.agent && { pid: n.agent.pid, healthz: n.agent.healthz, log: n.agent.log },
      })),
      pods: state.pods.map(({ name, netns, ip, ips, node }) => ({ name, netns, ip, ips: ips ?? [ip], node })),
      podMtu: state.podMtu,
      subnetLen: state.subnetLen,
    };
    console.log(JSON.stringify(doc, null, 2));
    return;
  }
  console.log(
    `lab ${state.name}: network ${state.network}, backend ${state.backend ?? 'vxlan'}${state.directRouting ? ' with DirectRouting' : ''}, underlay ${state.underlay.cidr} on ${state.underlay.bridge} in ${state.underlay.netns}`,
  );
  if (state.routedSegment) console.log(`routed segment ${state.routedSegment.cidr} on ${state.routedSegment.bridge}, gateway ${state.routedSegment.gateway}`);
  if (state.etcd) console.log(`etcd ${state.etcd.endpoint} (prefix ${state.etcd.prefix}) in ${state.etcd.netns}, pid ${state.etcd.pid}`);
  if (state.kube)
    console.log(
      `Kubernetes ${state.kube.apiserver} in ${state.kube.netns}; the daemons' kubeconfig ${state.kube.kubeconfig} (admin: ${state.kube.adminKubeconfig})`,
    );
  console.log('nodes');
  for (const n of state.nodes)
    console.log(
      `  ${n.name.padEnd(4)} ${n.dataplane.padEnd(8)} ${n.netns.padEnd(10)} ${[n.underlayIp, n.underlayIp6].filter(Boolean).join(' ').padEnd(15)} ${[n.subnet, n.subnet6].filter(Boolean).join(' ').padEnd(16)} vtep ${[n.vtepMac, n.vtepMac6].filter(Boolean).join(' ')}  ${n.pinDir}  agent pid ${n.agent?.pid ?? '-'}${n.image ? ` (image ${n.image})` : ''} healthz ${n.agent?.healthz ?? '-'}`,
    );
  console.log('pods');
  for (const p of state.pods) console.log(`  ${p.name.padEnd(7)} ${p.netns.padEnd(13)} ${(p.ips ?? [p.ip]).join(' ').padEnd(15)} on ${p.node}`);
}
