import { spawn } from 'node:child_process';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import { Etcd3 } from 'etcd3';
import { cmdline, stopWhile } from './processes.js';

/**
 * An etcd member (Debian's etcd-server) for the lab and the tests: alone, or one of a cluster
 * (initialCluster), optionally inside a network namespace. Detached: it outlives the command that
 * started it; `stopEtcd` ends it by pid after checking that the pid is still that etcd.
 */
export interface EtcdProcess {
  pid: number;
  endpoint: string;
  dataDir: string;
  logFile: string;
  netns?: string;
}

interface EtcdTls {
  cert: string;
  key: string;
  /** CA that client certificates must chain to (client-cert-auth) */
  ca: string;
}

interface EtcdStartOptions {
  name: string;
  host: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
  logFile: string;
  netns?: string;
  tls?: EtcdTls;
  /** every member as name=peer-url, for a cluster; default: this member alone */
  initialCluster?: string;
}

export async function startEtcd(opts: EtcdStartOptions): Promise<EtcdProcess> {
  mkdirSync(opts.dataDir, { recursive: true });
  const client = `${opts.tls ? 'https' : 'http'}://${opts.host}:${opts.clientPort}`;
  const peer = `http://${opts.host}:${opts.peerPort}`;
  const argv = [
    '/usr/bin/etcd',
    '--name',
    opts.name,
    '--data-dir',
    opts.dataDir,
    '--listen-client-urls',
    client,
    '--advertise-client-urls',
    client,
    '--listen-peer-urls',
    peer,
    '--initial-advertise-peer-urls',
    peer,
    '--initial-cluster',
    opts.initialCluster ?? `${opts.name}=${peer}`,
    '--initial-cluster-state',
    'new',
    ...(opts.tls ? ['--cert-file', opts.tls.cert, '--key-file', opts.tls.key, '--client-cert-auth', '--trusted-ca-file', opts.tls.ca] : []),
  ];
  const full = opts.netns ? ['nsenter', `--net=/run/netns/${opts.netns}`, '--', ...argv] : argv;
  const log = openSync(opts.logFile, 'a');
  // nsenter execs etcd in place, so the pid is etcd's own.
  const child = spawn(full[0], full.slice(1), { detached: true, stdio: ['ignore', log, log] });
  child.unref();
  const proc: EtcdProcess = { pid: child.pid!, endpoint: client, dataDir: opts.dataDir, logFile: opts.logFile, netns: opts.netns };
  await waitForEtcd(proc, opts.tls);
  return proc;
}

async function waitForEtcd(proc: EtcdProcess, tls?: EtcdTls, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  // The lab's etcd listens inside a namespace; probe it from there when needed.
  const probe = async () => {
    if (proc.netns) {
      const { run } = await import('../util/exec.js');
      const r = await run(['etcdctl', '--endpoints', proc.endpoint, '--command-timeout=1s', 'endpoint', 'health'], {
        netns: proc.netns,
        allowFailure: true,
        env: { ...process.env, ETCDCTL_API: '3' },
      });
      return r.code === 0;
    }
    const c = new Etcd3({
      hosts: proc.endpoint,
      defaultCallOptions: () => ({ deadline: Date.now() + 1000 }),
      credentials: tls && { rootCertificate: readFileSync(tls.ca), certChain: readFileSync(tls.cert), privateKey: readFileSync(tls.key) },
    });
    try {
      await c.get('health-probe');
      return true;
    } catch {
      return false;
    } finally {
      c.close();
    }
  };
  while (Date.now() < deadline) {
    if (hasExited(proc.pid))
      throw new Error(`etcd exited during start-up; log ${proc.logFile}:\n${readFileSync(proc.logFile, 'utf8').split('\n').slice(-15).join('\n')}`);
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`etcd at ${proc.endpoint} not healthy after ${timeoutMs} ms; log ${proc.logFile}`);
}

/**
 * Gone, or a zombie. Not `!isEtcd()`: while nsenter execs etcd the cmdline reads empty for a
 * moment, which made a healthy start look like an early exit now and then.
 */
export function hasExited(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** True while `proc.pid` is still the etcd with this data directory (pids get reused). */
export function isEtcd(proc: Pick<EtcdProcess, 'pid' | 'dataDir'>): boolean {
  const c = cmdline(proc.pid);
  return c.includes('etcd') && c.includes(proc.dataDir);
}

export const stopEtcd = (proc: Pick<EtcdProcess, 'pid' | 'dataDir'>, signal: NodeJS.Signals = 'SIGTERM') => stopWhile(proc.pid, () => isEtcd(proc), signal);
