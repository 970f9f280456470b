import type { CoreV1Api, Informer, KubeConfig, ObjectCache, V1Node, V1NodeList } from '@kubernetes/client-node';
import type { NodeView } from '../subnet/kube-nodes.js';

/*
 * The edge to the Kubernetes API, the only code that knows the client (as controller/etcd/store.ts
 * is for etcd). @kubernetes/client-node is imported here, through client.ts (which the build
 * bundles to the parts used), when Kubernetes mode starts: an etcd-mode agent never loads it.
 */

type Client = typeof import('./client.js');
let client: Promise<Client> | undefined;
const loadClient = () => (client ??= import('./client.js'));

export interface KubeConnection {
  /** --kube-api-url: overrides the kubeconfig's server */
  apiUrl?: string;
  /** --kubeconfig-file; absent: the pod's service account (in-cluster) */
  kubeconfigFile?: string;
}

/** What went wrong talking to the API server, said with what was asked: `get nodes/n1: 403 Forbidden: ...`. */
export class KubeApiError extends Error {
  override name = 'KubeApiError';
  constructor(
    readonly request: string,
    /** the HTTP status, undefined when the server was not reached */
    readonly status: number | undefined,
    detail: string,
  ) {
    super(`${request}: ${detail}`);
  }
  /** a refusal a ready API server repeated (KubeApi.request asked again): final */
  confirmed = false;
}

/** The API's error (an ApiException with a Status body) or a connection failure, as one line. */
function apiError(request: string, err: unknown): KubeApiError {
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: string; cause?: { code?: string; message?: string } };
  // The watch reports a refusal as an Error with statusCode and the status text only.
  if (typeof e.statusCode === 'number') return new KubeApiError(request, e.statusCode, `${e.statusCode} ${e.message ?? ''}`.trim());
  if (typeof e.code === 'number') {
    let body = e.body;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body);
      } catch {
        // not a Status: the text itself says it
      }
    }
    const status = body as { reason?: string; message?: string } | string | undefined;
    const detail = typeof status === 'object' && status ? `${status.reason ?? ''}: ${status.message ?? ''}` : String(status ?? '');
    return new KubeApiError(request, e.code, `${e.code} ${detail}`.trim());
  }
  const cause = e.cause?.code ?? e.cause?.message;
  return new KubeApiError(request, undefined, `API server unreachable (${[e.message, cause].filter(Boolean).join(': ')})`);
}

/** The fields of a Node the subnet manager reads. */
export const nodeView = (n: V1Node): NodeView => ({
  name: n.metadata?.name ?? '',
  annotations: n.metadata?.annotations ?? {},
  podCIDR: n.spec?.podCIDR,
  podCIDRs: n.spec?.podCIDRs,
});

export type NodeInformer = Informer<V1Node> & ObjectCache<V1Node>;

/**
 * What the informer keeps of a Node: the fields nodeView reads, and the metadata the list+watch
 * itself uses (name, resourceVersion). A kubelet's Node also carries its status (conditions,
 * images) and managedFields, which the agent never reads; cached whole, they made most of the
 * agent's memory growth with a cluster's Nodes (the Kubernetes-mode control-plane bench).
 */
export const cachedNode = (n: V1Node): V1Node => ({
  metadata: { name: n.metadata?.name, uid: n.metadata?.uid, resourceVersion: n.metadata?.resourceVersion, annotations: n.metadata?.annotations },
  spec: { podCIDR: n.spec?.podCIDR, podCIDRs: n.spec?.podCIDRs },
});

/** Nodes asked per list request: a large cluster's list is taken (and trimmed) in pages, never held whole. */
export const LIST_PAGE = 200;

/**
 * Every Node through `page` (a list request given the previous page's continue token), each
 * trimmed as it arrives, with the resourceVersion the watch must start from: the server serves
 * all pages from the first one's snapshot and names it on each.
 */
export async function listInPages(page: (cont: string | undefined) => Promise<V1NodeList>): Promise<V1NodeList> {
  const items: V1Node[] = [];
  let cont: string | undefined;
  let resourceVersion: string | undefined;
  do {
    const list = await page(cont);
    for (const n of list.items) items.push(cachedNode(n));
    resourceVersion = list.metadata?.resourceVersion ?? resourceVersion;
    cont = list.metadata?._continue || undefined;
  } while (cont);
  return { items, metadata: { resourceVersion } };
}

/** Watch events carrying a Node; the others (ERROR's Status, BOOKMARK) pass as they are. */
const NODE_EVENTS = new Set(['ADDED', 'MODIFIED', 'DELETED']);

export class KubeApi {
  private constructor(
    private readonly k8s: Client,
    private readonly config: KubeConfig,
    private readonly core: CoreV1Api,
    /** the server, for logs and status */
    readonly server: string,
  ) {}

  static async connect(c: KubeConnection): Promise<KubeApi> {
    const k8s = await loadClient();
    const config = new k8s.KubeConfig();
    if (c.kubeconfigFile) config.loadFromFile(c.kubeconfigFile);
    else config.loadFromCluster();
    if (c.apiUrl) {
      const current = config.getCurrentCluster();
      if (!current) throw new Error(`--kube-api-url ${c.apiUrl}: the kubeconfig has no current cluster to point at it`);
      config.loadFromOptions({
        clusters: config.clusters.map((cl) => (cl.name === current.name ? { ...cl, server: c.apiUrl! } : cl)),
        users: config.users,
        contexts: config.contexts,
        currentContext: config.currentContext,
      });
    }
    const server = config.getCurrentCluster()?.server;
    if (!server) throw new Error(`${c.kubeconfigFile ?? 'the in-cluster config'}: no API server named (a current context with a cluster)`);
    return new KubeApi(k8s, config, config.makeApiClient(k8s.CoreV1Api), server);
  }

  /**
   * Whether the API server says it is ready (/readyz); false while it starts, refuses the
   * question or cannot be reached.
   */
  async ready(): Promise<boolean> {
    try {
      return await new this.k8s.Health(this.config).readyz({});
    } catch {
      return false;
    }
  }

  /** Returns once the API server says it is ready, asking every second. */
  async untilReady(): Promise<void> {
    while (!(await this.ready())) await new Promise((r) => setTimeout(r, 1000));
  }

  /**
   * A request whose refusal is believed only when asked again of a ready API server: one that is
   * still starting answers 403 to everything until its authorizer has synced, and a restarted
   * API server meets the clients' retries there.
   */
  private async request<T>(what: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      const first = apiError(what, err);
      if (!KubeApi.refused(first)) throw first;
      await this.untilReady();
      try {
        return await send();
      } catch (again) {
        const second = apiError(what, again);
        second.confirmed = KubeApi.refused(second);
        throw second;
      }
    }
  }

  readNode(name: string): Promise<V1Node> {
    return this.request(`get nodes/${name}`, () => this.core.readNode({ name }));
  }

  /** The node a pod runs on (flannel's POD_NAME + POD_NAMESPACE fallback for NODE_NAME). */
  async nodeOfPod(namespace: string, name: string): Promise<string | undefined> {
    const pod = await this.request(`get pods/${name} -n ${namespace}`, () => this.core.readNamespacedPod({ namespace, name }));
    return pod.spec?.nodeName || undefined;
  }

  /**
   * A strategic merge patch of the node's status subresource, as flannel sends its annotations and
   * its NetworkUnavailable condition (deploy/kubernetes' ClusterRole grants `patch nodes/status`).
   */
  async patchNodeStatus(name: string, patch: object): Promise<void> {
    await this.request(`patch nodes/${name}/status`, () =>
      this.core.patchNodeStatus({ name, body: patch }, this.k8s.setHeaderOptions('Content-Type', this.k8s.PatchStrategy.StrategicMergePatch)),
    );
  }

  /**
   * A list+watch of every Node (the client's ListWatch, as makeInformer builds it), not started;
   * its list request names itself in errors. Every Node is trimmed to cachedNode before the
   * informer caches it or hands it on, from the list's pages and from the watch alike. `onListed`
   * hears of each full listing: the client lists at its start and again, by itself, when the
   * server says the watch's resourceVersion expired (410 Gone).
   */
  nodeInformer(onListed?: () => void): NodeInformer {
    class TrimmingWatch extends this.k8s.Watch {
      override watch(...[path, query, callback, done]: Parameters<InstanceType<Client['Watch']>['watch']>) {
        return super.watch(path, query, (phase, obj) => callback(phase, NODE_EVENTS.has(phase) ? cachedNode(obj as V1Node) : obj), done);
      }
    }
    return new this.k8s.ListWatch<V1Node>(
      '/api/v1/nodes',
      new TrimmingWatch(this.config),
      async () => {
        const list = await this.request('list nodes', () => listInPages((cont) => this.core.listNode({ limit: LIST_PAGE, _continue: cont })));
        onListed?.();
        return list;
      },
      false,
    );
  }

  /** An informer's error event (or any other), with what was asked: the list's errors name themselves, the rest is the watch's. */
  static error(err: unknown, request = 'watch nodes'): KubeApiError {
    return err instanceof KubeApiError ? err : apiError(request, err);
  }

  /** A refusal: RBAC denies the request, which no retry mends. */
  static refused(err: unknown): boolean {
    return err instanceof KubeApiError && (err.status === 401 || err.status === 403);
  }
}
