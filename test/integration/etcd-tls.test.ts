import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdStore } from '../../controller/etcd/store.js';
import { startEtcd, stopEtcd, type EtcdProcess } from '../../controller/lab/etcd.js';

/* etcd with TLS client-certificate authentication and then user/password auth, as operators run it. */
let dir: string;
let etcd: EtcdProcess;
const f = (name: string) => path.join(dir, name);
const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

function issue(name: string, ext: string) {
  openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f(`${name}.key`), '-subj', `/CN=${name}`, '-out', f(`${name}.csr`));
  writeFileSync(f(`${name}.ext`), ext);
  openssl(
    'x509',
    '-req',
    '-in',
    f(`${name}.csr`),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    f(`${name}.ext`),
    '-out',
    f(`${name}.pem`),
  );
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const etcdctl = (...args: string[]) =>
  execFileSync('etcdctl', ['--endpoints', etcd.endpoint, '--cacert', f('ca.pem'), '--cert', f('client.pem'), '--key', f('client.key'), ...args], {
    env: { ...process.env, ETCDCTL_API: '3' },
    encoding: 'utf8',
  });

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'twill-etcd-tls-'));
  openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-subj', '/CN=twill-test-ca', '-days', '1', '-out', f('ca.pem'));
  issue('server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n'); // etcd dials itself with it
  issue('client', 'extendedKeyUsage=clientAuth\n');
  etcd = await startEtcd({
    name: 'tls',
    host: '127.0.0.1',
    clientPort: await freePort(),
    peerPort: await freePort(),
    dataDir: f('data'),
    logFile: f('etcd.log'),
    tls: { cert: f('server.pem'), key: f('server.key'), ca: f('ca.pem') },
  });
}, 60_000);

afterAll(async () => {
  if (etcd) await stopEtcd(etcd);
  rmSync(dir, { recursive: true, force: true });
});

describe('etcd TLS and auth', () => {
  it('talks to etcd over TLS with a client certificate', async () => {
    expect(etcd.endpoint).toMatch(/^https:/);
    const store = new EtcdStore({
      endpoints: [etcd.endpoint],
      prefix: '/coreos.com/network',
      caFile: f('ca.pem'),
      certFile: f('client.pem'),
      keyFile: f('client.key'),
    });
    try {
      await store.putConfig('{"Network":"10.244.0.0/16"}');
      expect(await store.getConfig()).toBe('{"Network":"10.244.0.0/16"}');
    } finally {
      store.close();
    }
  });

  it('is refused without a client certificate', async () => {
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/coreos.com/network', caFile: f('ca.pem'), timeoutMs: 2000 });
    try {
      await expect(store.getConfig()).rejects.toThrow();
    } finally {
      store.close();
    }
  });

  it('authenticates with user and password once auth is enabled', async () => {
    etcdctl('user', 'add', 'root:rootpw');
    etcdctl('user', 'add', 'flannel:s3cret');
    etcdctl('role', 'add', 'flannel');
    etcdctl('role', 'grant-permission', 'flannel', '--prefix=true', 'readwrite', '/coreos.com/network/');
    etcdctl('user', 'grant-role', 'flannel', 'flannel');
    etcdctl('auth', 'enable');
    const tls = { caFile: f('ca.pem'), certFile: f('client.pem'), keyFile: f('client.key') };
    const good = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/coreos.com/network', ...tls, username: 'flannel', password: 's3cret' });
    const bad = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/coreos.com/network', ...tls, username: 'flannel', password: 'wrong', timeoutMs: 2000 });
    try {
      expect(await good.getConfig()).toBe('{"Network":"10.244.0.0/16"}');
      await expect(bad.getConfig()).rejects.toThrow(/authentication failed|invalid auth/i);
    } finally {
      good.close();
      bad.close();
    }
  });
});
