import http from 'node:http';
import type { AddressInfo } from 'node:net';

interface HealthState {
  /** Ready once the datapath is programmed and the subnet file written (flannel's readiness). */
  ready(): boolean;
  /** Why not ready, for the /readyz body. */
  detail(): Record<string, unknown>;
  /** /metrics: Prometheus text and its content type; absent: 404. */
  metrics?(): Promise<{ contentType: string; body: string }>;
}

/**
 * flannel's --healthz-ip/--healthz-port: /healthz answers while the process runs, /readyz once it
 * is useful, /metrics for Prometheus.
 */
export async function startHealthServer(host: string, port: number, state: HealthState): Promise<{ address: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    // http ignores what a listener returns: a request that fails after the await (or in
    // state.ready() or detail()) is answered 500 here instead of becoming an unhandled rejection.
    answer(req, res, state).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`internal error: ${(err as Error).message}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`healthz: cannot listen on ${host}:${port}: ${err.message}`)));
    server.listen(port, host, resolve);
  });
  const a = server.address() as AddressInfo;
  return {
    address: `${a.address}:${a.port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** One request: /healthz, /readyz, /metrics, or 404 (405 for anything but GET). */
async function answer(req: http.IncomingMessage, res: http.ServerResponse, state: HealthState): Promise<void> {
  const url = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET') {
    res.writeHead(405).end();
    return;
  }
  if (url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
  } else if (url === '/readyz') {
    const ready = state.ready();
    res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' }).end(JSON.stringify({ ready, ...state.detail() }) + '\n');
  } else if (url === '/metrics' && state.metrics) {
    let scrape: { contentType: string; body: string };
    try {
      scrape = await state.metrics();
    } catch (err) {
      // A scrape that cannot read the counters fails visibly rather than reporting zeros.
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics unavailable: ${(err as Error).message}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': scrape.contentType }).end(scrape.body);
  } else {
    res.writeHead(404).end();
  }
}
