import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import path from 'node:path';
import { run } from '../util/exec.js';
import { hasExited } from './etcd.js';
import { kubeApiserver, kubeControllerManager, kubectl } from './peers.js';

/*
 * A real Kubernetes control plane for flannel's Kubernetes mode: kube-apiserver against an etcd
 * the caller started, and kube-controller-manager whose node IPAM controller gives each Node its
 * podCIDR(s), which is what flanneld --kube-subnet-mgr (and twill beside it) reads. Both are the
 * releases scripts/peers/build.sh built; certificates are made here with openssl, as a cluster
 * built by hand would make them. The processes are detached, like the lab's etcd: they outlive
 * the command that started them and are stopped by pid after checking the pid is still theirs.
 */

export interface KubeControlPlaneOptions {
  /** certificates, kubeconfigs and logs go here */
  stateDir: string;
  /** the etcd that holds the cluster, e.g. http://127.0.0.1:2379 */
  etcdEndpoint: string;
  /** where in etcd this cluster's objects live; two clusters can share one etcd (default /registry) */
  etcdPrefix?: string;
  /** pods' IPv4 addresses, split into one block per Node */
  clusterCidr: string;
  /** pods' IPv6 addresses too: the cluster is dual-stack and every Node gets a block of each */
  clusterCidr6?: string;
  /** prefix length of each Node's IPv4 block (flannel's default network config: 24) */
  nodeCidrMaskSize: number;
  /** prefix length of each Node's IPv6 block (default 64) */
  nodeCidrMaskSize6?: number;
  serviceCidr: string;
  serviceCidr6?: string;
  /** the API server's address and port; kube-controller-manager serves its health on the next port */
  listen: { address: string; port: number };
  /** run both inside this network namespace (by nsenter, as the lab's etcd runs) */
  netns?: string;
  /** kube-controller-manager's --controllers (default: the node IPAM controller alone) */
  controllers?: string[];
}

export interface KubeProcess {
  program: 'kube-apiserver' | 'kube-controller-manager';
  pid: number;
  logFile: string;
  stop(): Promise<void>;
}

export interface KubeControlPlane {
  apiserver: KubeProcess;
  controllerManager: KubeProcess;
  /** https://address:port */
  server: string;
  /** a kubeconfig for a cluster admin (system:masters), for kubectl and clients */
  adminKubeconfig: string;
  caCert: string;
  /** stops the controller manager, then the API server, and waits until both are gone */
  stop(): Promise<void>;
}

/** Where each file lives under the state dir; pure, so arguments can be built and tested without it. */
export function controlPlaneFiles(stateDir: string) {
  const f = (name: string) => path.join(stateDir, name);
  return {
    caKey: f('ca.key'),
    caCert: f('ca.pem'),
    apiserverKey: f('apiserver.key'),
    apiserverCert: f('apiserver.pem'),
    serviceAccountKey: f('service-account.key'),
    serviceAccountPub: f('service-account.pub'),
    adminKey: f('admin.key'),
    adminCert: f('admin.pem'),
    controllerManagerKey: f('controller-manager.key'),
    controllerManagerCert: f('controller-manager.pem'),
    adminKubeconfig: f('admin.kubeconfig'),
    controllerManagerKubeconfig: f('controller-manager.kubeconfig'),
    apiserverLog: f('kube-apiserver.log'),
    controllerManagerLog: f('kube-controller-manager.log'),
  };
}

/** https://host:port, with an IPv6 host in brackets. */
export function httpsUrl(address: string, port: number): string {
  return `https://${isIPv6(address) ? `[${address}]` : address}:${port}`;
}

/**
 * The first address of a service CIDR: the API server gives it to the `kubernetes` Service, so
 * its serving certificate must name it for clients in pods.
 */
export function firstServiceIp(cidr: string): string {
  const [base, len] = cidr.split('/');
  if (isIPv6(base)) {
    const groups = expandIPv6(base);
    const n = groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n) + 1n;
    const out = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(16 * (7 - i))) & 0xffffn).toString(16));
    return compressIPv6(out);
  }
  const octets = base.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255)) || !(Number(len) >= 0 && Number(len) <= 30))
    throw new Error(`service CIDR ${cidr} is not an IPv4 CIDR with room for a service`);
  const mask = Number(len) === 0 ? 0 : (~0 << (32 - Number(len))) >>> 0;
  const n = ((((octets[0] << 24) | (octets[1] << 16) | (octets[2] << 8) | octets[3]) >>> 0) & mask) + 1;
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

function expandIPv6(addr: string): number[] {
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const parse = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  return tail === undefined ? h : [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
}

function compressIPv6(groups: string[]): string {
  // The longest run of two or more zero groups becomes "::", as RFC 5952 writes it.
  let best = { at: -1, len: 0 };
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best.len && j - i >= 2) best = { at: i, len: j - i };
    i = j;
  }
  if (best.at < 0) return groups.join(':');
  return `${groups.slice(0, best.at).join(':')}::${groups.slice(best.at + best.len).join(':')}`;
}

const joinFamilies = (v4: string, v6?: string) => (v6 ? `${v4},${v6}` : v4);

const isLoopback = (address: string) => address === '::1' || address.startsWith('127.');

/** Pure: kube-apiserver's arguments (without the program itself). */
export function apiserverArgs(opts: KubeControlPlaneOptions): string[] {
  const f = controlPlaneFiles(opts.stateDir);
  // The endpoint reconciler publishes the advertised address as the `kubernetes` Service's
  // endpoint, and Kubernetes refuses to start with a loopback one there. On loopback nothing in
  // a pod could reach it anyway, so the Service is left without endpoints.
  const reconciler = isLoopback(opts.listen.address) ? ['--endpoint-reconciler-type=none'] : [];
  return [
    `--etcd-servers=${opts.etcdEndpoint}`,
    `--etcd-prefix=${opts.etcdPrefix ?? '/registry'}`,
    `--bind-address=${opts.listen.address}`,
    `--secure-port=${opts.listen.port}`,
    // Where the `kubernetes` Service's endpoints point; without it the API server looks for an
    // address on a default route, which a lab namespace does not have.
    `--advertise-address=${opts.listen.address}`,
    `--service-cluster-ip-range=${joinFamilies(opts.serviceCidr, opts.serviceCidr6)}`,
    `--tls-cert-file=${f.apiserverCert}`,
    `--tls-private-key-file=${f.apiserverKey}`,
    `--client-ca-file=${f.caCert}`,
    `--service-account-issuer=https://kubernetes.default.svc.cluster.local`,
    `--service-account-key-file=${f.serviceAccountPub}`,
    `--service-account-signing-key-file=${f.serviceAccountKey}`,
    '--authorization-mode=Node,RBAC',
    // As kubeadm runs it: node agents (flannel's, twill's) are privileged DaemonSets.
    '--allow-privileged=true',
    ...reconciler,
  ];
}

/** kube-controller-manager serves its own /healthz on the port after the API server's. */
export const controllerManagerPort = (opts: KubeControlPlaneOptions) => opts.listen.port + 1;

/** Pure: kube-controller-manager's arguments (without the program itself). */
export function controllerManagerArgs(opts: KubeControlPlaneOptions): string[] {
  const f = controlPlaneFiles(opts.stateDir);
  // Kubernetes refuses --node-cidr-mask-size in a dual-stack cluster: each family has its own.
  const masks = opts.clusterCidr6
    ? [`--node-cidr-mask-size-ipv4=${opts.nodeCidrMaskSize}`, `--node-cidr-mask-size-ipv6=${opts.nodeCidrMaskSize6 ?? 64}`]
    : [`--node-cidr-mask-size=${opts.nodeCidrMaskSize}`];
  return [
    `--kubeconfig=${f.controllerManagerKubeconfig}`,
    // Without these it cannot check who asks for its /metrics and logs a warning for each.
    `--authentication-kubeconfig=${f.controllerManagerKubeconfig}`,
    `--authorization-kubeconfig=${f.controllerManagerKubeconfig}`,
    `--bind-address=${opts.listen.address}`,
    `--secure-port=${controllerManagerPort(opts)}`,
    `--tls-cert-file=${f.controllerManagerCert}`,
    `--tls-private-key-file=${f.controllerManagerKey}`,
    `--controllers=${(opts.controllers ?? ['node-ipam-controller']).join(',')}`,
    // Each controller acts as its own service account (node-ipam as node-controller), with the
    // rights RBAC's bootstrap roles give it, as kubeadm runs it.
    '--use-service-account-credentials',
    `--service-account-private-key-file=${f.serviceAccountKey}`,
    `--root-ca-file=${f.caCert}`,
    '--allocate-node-cidrs',
    `--cluster-cidr=${joinFamilies(opts.clusterCidr, opts.clusterCidr6)}`,
    ...masks,
    `--service-cluster-ip-range=${joinFamilies(opts.serviceCidr, opts.serviceCidr6)}`,
    // One instance: no need to wait for (or hold) a lease before the controllers run.
    '--leader-elect=false',
  ];
}

/** Pure: a kubeconfig (JSON is YAML) naming certificate files rather than embedding them. */
export function kubeconfig(server: string, caCert: string, user: string, cert: string, key: string): string {
  return JSON.stringify(
    {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'twill', cluster: { server, 'certificate-authority': caCert } }],
      users: [{ name: user, user: { 'client-certificate': cert, 'client-key': key } }],
      contexts: [{ name: 'twill', context: { cluster: 'twill', user } }],
      'current-context': 'twill',
    },
    null,
    2,
  );
}

async function openssl(args: string[]): Promise<void> {
  await run(['openssl', ...args]);
}

/** A key and a certificate signed by the CA, with the subject and SANs given. */
async function signedCert(
  stateDir: string,
  f: ReturnType<typeof controlPlaneFiles>,
  key: string,
  cert: string,
  subject: string,
  extensions: string[],
): Promise<void> {
  const csr = `${cert}.csr`;
  const ext = `${cert}.ext`;
  writeFileSync(ext, extensions.join('\n') + '\n');
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-subj', subject, '-out', csr]);
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    f.caCert,
    '-CAkey',
    f.caKey,
    '-CAcreateserial',
    '-CAserial',
    path.join(stateDir, 'ca.srl'),
    '-days',
    '365',
    '-sha256',
    '-extfile',
    ext,
    '-out',
    cert,
  ]);
}

/**
 * The CA, serving and client certificates and the service-account key pair, made once per state
 * dir: a restart keeps the cluster's identity (tokens and kubeconfigs stay valid).
 */
async function makeCertificates(opts: KubeControlPlaneOptions): Promise<void> {
  const f = controlPlaneFiles(opts.stateDir);
  if (!existsSync(f.caCert))
    await openssl([
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      f.caKey,
      '-subj',
      '/CN=twill-kubernetes-ca',
      '-days',
      '3650',
      '-sha256',
      '-out',
      f.caCert,
    ]);
  const serviceIps = [opts.serviceCidr, opts.serviceCidr6].filter((c): c is string => !!c).map(firstServiceIp);
  const ips = [...new Set([opts.listen.address, '127.0.0.1', ...serviceIps])];
  const names = ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'];
  const san = `subjectAltName=${[...ips.map((i) => `IP:${i}`), ...names.map((n) => `DNS:${n}`)].join(',')}`;
  const server = ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth', san];
  const client = ['basicConstraints=CA:FALSE', 'keyUsage=digitalSignature,keyEncipherment', 'extendedKeyUsage=clientAuth'];
  if (!existsSync(f.apiserverCert)) await signedCert(opts.stateDir, f, f.apiserverKey, f.apiserverCert, '/CN=kube-apiserver', server);
  // The controller manager's serving and client certificate in one, as its identity for RBAC.
  if (!existsSync(f.controllerManagerCert))
    await signedCert(opts.stateDir, f, f.controllerManagerKey, f.controllerManagerCert, '/CN=system:kube-controller-manager', [
      ...server.slice(0, 2),
      'extendedKeyUsage=serverAuth,clientAuth',
      san,
    ]);
  if (!existsSync(f.adminCert)) await signedCert(opts.stateDir, f, f.adminKey, f.adminCert, '/O=system:masters/CN=twill-admin', client);
  if (!existsSync(f.serviceAccountPub)) {
    await openssl(['genrsa', '-out', f.serviceAccountKey, '2048']);
    await openssl(['rsa', '-in', f.serviceAccountKey, '-pubout', '-out', f.serviceAccountPub]);
  }
}

/**
 * The end of a log, for an error: klog's error and fatal lines if there are any (they come
 * after screens of informational start-up lines), else the last lines.
 */
export function logTail(text: string, lines = 15): string {
  const all = text.trimEnd().split('\n');
  const errors = all.filter((l) => /^[EF]\d{4} /.test(l));
  return (errors.length ? errors : all).slice(-lines).join('\n');
}

const tail = (file: string) => {
  try {
    return logTail(readFileSync(file, 'utf8'));
  } catch {
    return '(no log)';
  }
};

/** The pid is still this program, started with this state dir (pids are reused). */
function isOurs(pid: number, program: string, stateDir: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes(program) && cmdline.includes(stateDir) && !hasExited(pid);
  } catch {
    return false;
  }
}

/** Stops one of the control plane's programs by pid, only while that pid is still it (the lab's down and tests use it too). */
export async function stopProcess(pid: number, program: string, stateDir: string): Promise<void> {
  if (!isOurs(pid, program, stateDir)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200 && isOurs(pid, program, stateDir); i++) await new Promise((r) => setTimeout(r, 50));
  if (isOurs(pid, program, stateDir)) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && !hasExited(pid); i++) await new Promise((r) => setTimeout(r, 50));
}

function startDetached(program: KubeProcess['program'], bin: string, args: string[], logFile: string, opts: KubeControlPlaneOptions): KubeProcess {
  const argv = [bin, ...args];
  const full = opts.netns ? ['nsenter', `--net=/run/netns/${opts.netns}`, '--', ...argv] : argv;
  const log = openSync(logFile, 'a');
  // nsenter execs the program in place, so the pid is the program's own.
  const child = spawn(full[0], full.slice(1), { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  child.unref();
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${program} (${bin}) could not be started; log ${logFile}`);
  return { program, pid, logFile, stop: () => stopProcess(pid, program, opts.stateDir) };
}

/**
 * Waits until `kubectl get --raw PATH` against SERVER says ok; fails early, with the tail of the
 * process's log, if the process exits first.
 */
async function waitUntilOk(proc: KubeProcess, server: string, rawPath: string, opts: KubeControlPlaneOptions, timeoutMs: number): Promise<void> {
  const f = controlPlaneFiles(opts.stateDir);
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    if (hasExited(proc.pid)) throw new Error(`${proc.program} exited during start-up (serving ${server}); log ${proc.logFile}:\n${tail(proc.logFile)}`);
    const r = await run([kubectl().bin, '--kubeconfig', f.adminKubeconfig, '--server', server, '--request-timeout=5s', 'get', '--raw', rawPath], {
      netns: opts.netns,
      allowFailure: true,
    });
    if (r.code === 0 && r.stdout.trim() === 'ok') return;
    last = (r.stderr || r.stdout).trim();
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(
    `${proc.program} at ${server}${rawPath} not ok after ${timeoutMs} ms (last answer: ${last || 'none'}); log ${proc.logFile}:\n${tail(proc.logFile)}`,
  );
}

/**
 * Refuses a port something already listens on: a leftover API server there would answer the
 * readiness probe while the one just started fails to bind.
 */
async function expectPortFree(program: string, address: string, port: number, netns?: string): Promise<void> {
  const r = await run(['ss', '-Hltn', `sport = :${port}`], { netns });
  if (r.stdout.trim())
    throw new Error(`${program} cannot listen on ${address} port ${port}${netns ? ` in netns ${netns}` : ''}: something already does:\n${r.stdout.trim()}`);
}

/**
 * Starts kube-apiserver and kube-controller-manager for the given cluster, waits until the API
 * server's /readyz and the controller manager's /healthz say ok, and returns handles to stop
 * them. On a failed start, whatever it started is stopped before the error (which names the
 * program, its address and the tail of its log) is thrown.
 */
export async function startKubeControlPlane(opts: KubeControlPlaneOptions, timeoutMs = 180_000): Promise<KubeControlPlane> {
  // Resolved first: a missing build fails here, naming module and version, before anything starts.
  kubeApiserver();
  kubeControllerManager();
  kubectl();
  mkdirSync(opts.stateDir, { recursive: true });
  const f = controlPlaneFiles(opts.stateDir);
  await makeCertificates(opts);
  const server = httpsUrl(opts.listen.address, opts.listen.port);
  writeFileSync(f.adminKubeconfig, kubeconfig(server, f.caCert, 'twill-admin', f.adminCert, f.adminKey), { mode: 0o600 });
  writeFileSync(
    f.controllerManagerKubeconfig,
    kubeconfig(server, f.caCert, 'system:kube-controller-manager', f.controllerManagerCert, f.controllerManagerKey),
    { mode: 0o600 },
  );

  const started: KubeProcess[] = [];
  const stopAll = async () => {
    for (const p of [...started].reverse()) await p.stop();
  };
  try {
    const apiserver = await launch('kube-apiserver', opts, timeoutMs);
    started.push(apiserver);
    const controllerManager = await launch('kube-controller-manager', opts, timeoutMs);
    started.push(controllerManager);
    return { apiserver, controllerManager, server, adminKubeconfig: f.adminKubeconfig, caCert: f.caCert, stop: stopAll };
  } catch (err) {
    await stopAll();
    throw err;
  }
}

/** How each program is started and asked whether it is up. */
function programSpec(program: KubeProcess['program'], opts: KubeControlPlaneOptions) {
  const f = controlPlaneFiles(opts.stateDir);
  return program === 'kube-apiserver'
    ? { bin: kubeApiserver().bin, args: apiserverArgs(opts), log: f.apiserverLog, port: opts.listen.port, probe: '/readyz' }
    : {
        bin: kubeControllerManager().bin,
        args: controllerManagerArgs(opts),
        log: f.controllerManagerLog,
        port: controllerManagerPort(opts),
        probe: '/healthz',
      };
}

/** Starts one program and waits until it says ok; one that never does is stopped before the error. */
async function launch(program: KubeProcess['program'], opts: KubeControlPlaneOptions, timeoutMs: number): Promise<KubeProcess> {
  const spec = programSpec(program, opts);
  await expectPortFree(program, opts.listen.address, spec.port, opts.netns);
  const proc = startDetached(program, spec.bin, spec.args, spec.log, opts);
  try {
    await waitUntilOk(proc, httpsUrl(opts.listen.address, spec.port), spec.probe, opts, timeoutMs);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return proc;
}

/**
 * Starts one program of a control plane started before (its certificates and files are in the
 * state dir), after it was stopped: tests take the API server or the controller manager away
 * and bring it back. Waits until it is ready.
 */
export function restartKubeProcess(program: KubeProcess['program'], opts: KubeControlPlaneOptions, timeoutMs = 180_000): Promise<KubeProcess> {
  return launch(program, opts, timeoutMs);
}
