import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startEtcd as launch, stopEtcd, type EtcdProcess } from '../../controller/lab/etcd.js';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface TestEtcd {
  endpoint: string;
  proc: EtcdProcess;
  /** stops it (data kept) */
  stop(): Promise<void>;
  /** starts it again on the same ports and data */
  restart(): Promise<void>;
  /** stops it and removes its data */
  destroy(): Promise<void>;
}

/** A throwaway etcd on loopback with its own ports and data directory. */
export async function startTestEtcd(): Promise<TestEtcd> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'twill-etcd-'));
  const clientPort = await freePort();
  const peerPort = await freePort();
  const opts = { name: 't', host: '127.0.0.1', clientPort, peerPort, dataDir: path.join(dir, 'data'), logFile: path.join(dir, 'etcd.log') };
  const t: TestEtcd = {
    endpoint: `http://127.0.0.1:${clientPort}`,
    proc: await launch(opts),
    stop: () => stopEtcd(t.proc),
    restart: async () => {
      t.proc = await launch(opts);
    },
    destroy: async () => {
      await stopEtcd(t.proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return t;
}
