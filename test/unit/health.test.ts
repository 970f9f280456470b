import { afterEach, describe, expect, it } from 'vitest';
import { startHealthServer } from '../../controller/agent/health.js';

let close: (() => Promise<void>) | undefined;
afterEach(async () => {
  await close?.();
  close = undefined;
});

async function serve(state: Parameters<typeof startHealthServer>[2]) {
  const s = await startHealthServer('127.0.0.1', 0, state);
  close = s.close;
  // A request left unanswered fails the test in 5 s instead of hanging it.
  return (p: string) => fetch(`http://${s.address}${p}`, { signal: AbortSignal.timeout(5000) });
}

describe('the health server', () => {
  it('answers /healthz, /readyz and /metrics, and 404 elsewhere', async () => {
    const get = await serve({ ready: () => true, detail: () => ({ lease: 'ok' }), metrics: async () => ({ contentType: 'text/plain', body: 'm 1\n' }) });
    expect(await (await get('/healthz')).text()).toBe('ok\n');
    expect(await (await get('/readyz')).json()).toEqual({ ready: true, lease: 'ok' });
    expect(await (await get('/metrics')).text()).toBe('m 1\n');
    expect((await get('/nothing')).status).toBe(404);
  });

  // The request listener is synchronous (no-misused-promises): a failure inside the async handler
  // is answered, not left as an unhandled rejection that would end the agent.
  it('answers 500 when the state itself throws, and keeps serving', async () => {
    const get = await serve({
      ready: () => {
        throw new Error('state torn');
      },
      detail: () => ({}),
    });
    const res = await get('/readyz');
    expect(res.status).toBe(500);
    expect(await res.text()).toBe('internal error: state torn\n');
    expect((await get('/healthz')).status).toBe(200);
  });
});
