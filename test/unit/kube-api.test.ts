import type { V1Node, V1NodeList } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { cachedNode, listInPages, nodeView } from '../../controller/kube/api.js';
import { kubeAnnotations, nodeToLease } from '../../controller/subnet/kube-nodes.js';

const P = 'flannel.alpha.coreos.com/';

/** A Node as kubelet and flanneld leave it: everything the API server returns, most of which the agent never reads. */
function kubeletNode(name: string, podCIDRs: string[], resourceVersion = '42'): V1Node {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      uid: `uid-${name}`,
      resourceVersion,
      creationTimestamp: new Date('2026-01-01T00:00:00Z'),
      labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' },
      annotations: {
        [`${P}kube-subnet-manager`]: 'true',
        [`${P}backend-type`]: 'vxlan',
        [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}',
        [`${P}backend-v6-data`]: '{"VNI":1,"VtepMAC":"0a:00:00:00:06:02"}',
        [`${P}public-ip`]: '192.168.1.2',
        [`${P}public-ipv6`]: 'fd01::2',
        'node.alpha.kubernetes.io/ttl': '0',
      },
      managedFields: [{ manager: 'kubelet', operation: 'Update', apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:status': {} } }],
    },
    spec: { podCIDR: podCIDRs[0], podCIDRs, providerID: `bench://${name}` },
    status: {
      addresses: [{ type: 'InternalIP', address: '192.168.1.2' }],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' }],
      images: [{ names: ['registry.example.com/app@sha256:00', 'registry.example.com/app:v1'], sizeBytes: 1 }],
      nodeInfo: {
        machineID: 'm',
        systemUUID: 's',
        bootID: 'b',
        kernelVersion: 'k',
        osImage: 'o',
        containerRuntimeVersion: 'c',
        kubeletVersion: 'v',
        kubeProxyVersion: '',
        operatingSystem: 'linux',
        architecture: 'amd64',
      },
    },
  };
}

describe("the informer's copy of a Node (cachedNode)", () => {
  const full = kubeletNode('n2', ['10.244.2.0/24', 'fd00:0:0:2::/64']);
  const kept = cachedNode(full);

  it('gives the subnet manager the same view, and so the same lease, as the whole Node', () => {
    expect(nodeView(kept)).toEqual(nodeView(full));
    const names = kubeAnnotations('flannel.alpha.coreos.com');
    for (const families of [
      { ipv4: true, ipv6: true },
      { ipv4: true, ipv6: false },
      { ipv4: false, ipv6: true },
    ])
      expect(nodeToLease(nodeView(kept), names, families)).toEqual(nodeToLease(nodeView(full), names, families));
  });

  it('keeps what the list+watch itself uses (name, resourceVersion) and none of the status, labels or managedFields', () => {
    expect(kept.metadata).toMatchObject({ name: 'n2', uid: 'uid-n2', resourceVersion: '42' });
    expect(kept.status).toBeUndefined();
    expect(kept.metadata?.managedFields).toBeUndefined();
    expect(kept.metadata?.labels).toBeUndefined();
    expect(kept.spec?.providerID).toBeUndefined();
  });

  it('keeps a Node without annotations or podCIDR as such (not yet annotated, not yet allocated)', () => {
    const bare: V1Node = { metadata: { name: 'n3', resourceVersion: '7' } };
    expect(nodeView(cachedNode(bare))).toEqual(nodeView(bare));
  });
});

describe('the list in pages (listInPages)', () => {
  const list = (items: V1Node[], resourceVersion: string, cont?: string): V1NodeList => ({ items, metadata: { resourceVersion, _continue: cont } });

  it('asks with each continue token until none, and returns every Node trimmed, in order, at the snapshot the pages name', async () => {
    const pages: Record<string, V1NodeList> = {
      first: list([kubeletNode('a', ['10.244.1.0/24']), kubeletNode('b', ['10.244.2.0/24'])], '100', 'page2'),
      page2: list([kubeletNode('c', ['10.244.3.0/24'])], '100', 'page3'),
      page3: list([kubeletNode('d', ['10.244.4.0/24'])], '100'),
    };
    const asked: (string | undefined)[] = [];
    const all = await listInPages(async (cont) => {
      asked.push(cont);
      return pages[cont ?? 'first'];
    });
    expect(asked).toEqual([undefined, 'page2', 'page3']);
    expect(all.metadata?.resourceVersion).toBe('100');
    expect(all.items.map((n) => n.metadata?.name)).toEqual(['a', 'b', 'c', 'd']);
    expect(all.items).toEqual(Object.values(pages).flatMap((p) => p.items.map(cachedNode)));
  });

  it('takes a server that ignores the limit (one page, no continue) and an empty cluster', async () => {
    const one = await listInPages(async () => list([kubeletNode('a', ['10.244.1.0/24'])], '5'));
    expect(one).toEqual({ items: [cachedNode(kubeletNode('a', ['10.244.1.0/24']))], metadata: { resourceVersion: '5' } });
    expect(await listInPages(async () => list([], '6', ''))).toEqual({ items: [], metadata: { resourceVersion: '6' } });
  });

  it('fails with the page that failed: the informer lists again from the start', async () => {
    let n = 0;
    const failing = listInPages(async () => {
      if (n++ === 1) throw new Error('410 Gone: the continue token expired');
      return list([kubeletNode('a', ['10.244.1.0/24'])], '5', 'next');
    });
    await expect(failing).rejects.toThrow('410 Gone');
  });
});
