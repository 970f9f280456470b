import type { CoreV1Api, Informer, KubeConfig, ObjectCache, V1Node } from '@kubernetes/client-node';
import type { NodeView } from '../subnet/kube-nodes.js';

/*
 * The edge to the Kubernetes API, the only code that knows the client (as controller/etcd/store.ts
 * is for etcd). @kubernetes/client-node is imported here, when Kubernetes mode starts: it costs
 * about 0.6 s and 70-90 MB to load, which an etcd-mode agent never pays.
 */

type Client = typeof import('@kubernetes/client-node');
let client: Promise<Client> | undefined;
const loadClient = () => (client ??= import('@kubernetes/client-node'));

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
        throw apiError(what, again);
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
   * A list+watch of every Node, not started; its list request names itself in errors. `onListed`
   * hears of each full listing: the client lists at its start and again, by itself, when the
   * server says the watch's resourceVersion expired (410 Gone).
   */
  nodeInformer(onListed?: () => void): NodeInformer {
    return this.k8s.makeInformer(this.config, '/api/v1/nodes', async () => {
      const list = await this.request('list nodes', () => this.core.listNode());
      onListed?.();
      return list;
    });
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
