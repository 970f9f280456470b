import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startEtcd, stopEtcd, type EtcdProcess } from '../../controller/lab/etcd.js';
import { choiceRecordPath } from '../../controller/dataplane/choice-record.js';
import { pinPaths } from '../../controller/dataplane/spec.js';
import { flanneld } from '../../controller/lab/peers.js';
import { run } from '../../controller/util/exec.js';
import { twillBin } from '../../controller/util/paths.js';
import { startInNetns, type Background } from './proc.js';

/*
 * One node namespace with an `eth0` veth, and an etcd inside it on loopback, on which the real
 * flanneld and twill's agent are started in turn against the same etcd contents. What each did
 * with a config is an Outcome: it wrote its subnet file, it exited, or it kept retrying (each
 * program says so in a log line: flanneld's getConfig loop, twill's waitForConfig).
 */

export const PREFIX = '/coreos.com/network';

export type Outcome = { kind: 'accepts'; file: string } | { kind: 'exits'; code: number | null; message: string } | { kind: 'waits'; message: string };

export const describeOutcome = (o: Outcome): string =>
  o.kind === 'accepts' ? 'accepts' : o.kind === 'exits' ? `exits ${o.code}: ${o.message}` : `waits: ${o.message}`;

export interface ParityNode {
  netns: string;
  address: string;
  address6: string;
  dir: string;
  pinDir: string;
  etcdctl(...args: string[]): Promise<string>;
  /** a fresh start: config set (or deleted), no leases, no subnet files left to hint at a subnet */
  reset(config: string | undefined): Promise<void>;
  setMtu(mtu: number): Promise<void>;
  /** every lease record, as `key value` lines */
  leases(): Promise<string>;
  /** `hint`: a subnet file to find at start (both read it for their previous subnet) */
  flanneld(extra?: string[], hint?: string): Promise<Outcome>;
  twill(extra?: string[], hint?: string): Promise<Outcome>;
  destroy(): Promise<void>;
}

const sh = (argv: string[], netns?: string) => run(argv, { netns });

/** The last line of a program's output that matches, trimmed for the table. */
function lastLine(out: string, pattern: RegExp): string {
  const lines = out.split('\n').filter((l) => pattern.test(l));
  return (lines.at(-1) ?? out.trim().split('\n').at(-1) ?? '').trim();
}

/**
 * Runs a program until it shows what it does with the config: writes `subnetFile`, exits, or
 * prints `waiting` (a retry loop); `before`: what the file held at start (a subnet hint), which
 * does not count as written. `boundMs` bounds a program that does none of these, which
 * counts as waiting. The program is stopped before this returns.
 */
async function observe(p: Background, subnetFile: string, waiting: RegExp, errorLine: RegExp, boundMs: number, before?: string): Promise<Outcome> {
  const deadline = Date.now() + boundMs;
  let outcome: Outcome | undefined;
  let exitCode: number | null | undefined;
  void p.exited.then((c) => (exitCode = c));
  while (!outcome) {
    const file = existsSync(subnetFile) ? readFileSync(subnetFile, 'utf8') : undefined;
    if (file !== undefined && file !== before) outcome = { kind: 'accepts', file };
    else if (exitCode !== undefined) outcome = { kind: 'exits', code: exitCode, message: lastLine(p.output(), errorLine) };
    else if (waiting.test(p.output())) outcome = { kind: 'waits', message: lastLine(p.output(), waiting) };
    else if (Date.now() > deadline) outcome = { kind: 'waits', message: `(nothing within ${boundMs} ms) ${lastLine(p.output(), errorLine)}` };
    else await new Promise((r) => setTimeout(r, 50));
  }
  p.kill('SIGTERM');
  const killer = setTimeout(() => p.kill('SIGKILL'), 5000);
  await p.exited;
  clearTimeout(killer);
  return outcome;
}

export async function createParityNode(netns: string, address: string, address6: string): Promise<ParityNode> {
  await run(['ip', 'netns', 'del', netns], { allowFailure: true });
  await sh(['ip', 'netns', 'add', netns]);
  await sh(['ip', '-n', netns, 'link', 'set', 'lo', 'up']);
  await sh(['ip', '-n', netns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
  await sh(['ip', '-n', netns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
  await sh(['ip', '-n', netns, '-6', 'addr', 'add', `${address6}/64`, 'dev', 'eth0', 'nodad']);
  await sh(['ip', '-n', netns, 'link', 'set', 'eth0', 'up']);
  await sh(['ip', '-n', netns, 'link', 'set', 'eth0p', 'up']);
  const dir = mkdtempSync(path.join(os.tmpdir(), `${netns}-`));
  let etcd: EtcdProcess | undefined;
  const pinDir = `/sys/fs/bpf/${netns}`;
  const destroy = async () => {
    if (etcd) await stopEtcd(etcd);
    await run(['ip', 'netns', 'del', netns], { allowFailure: true });
    rmSync(pinDir, { recursive: true, force: true });
    // What the kernel-dataplane agent records about the node, by pin directory.
    rmSync(choiceRecordPath(pinDir), { force: true });
    rmSync(path.dirname(pinPaths(pinDir).attachState), { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    etcd = await startEtcd({
      name: 'p',
      host: '127.0.0.1',
      clientPort: 2379,
      peerPort: 2380,
      dataDir: path.join(dir, 'etcd'),
      logFile: path.join(dir, 'etcd.log'),
      netns,
    });
  } catch (err) {
    await destroy();
    throw err;
  }
  const endpoint = etcd.endpoint;
  const etcdctl = async (...args: string[]) =>
    (await run(['etcdctl', '--endpoints', endpoint, ...args], { netns, env: { ...process.env, ETCDCTL_API: '3' } })).stdout;
  const files = { flanneld: path.join(dir, 'flanneld-subnet.env'), twill: path.join(dir, 'twill-subnet.env') };
  const node: ParityNode = {
    netns,
    address,
    address6,
    dir,
    pinDir,
    etcdctl,
    async reset(config) {
      // Devices the last program left (flannel.<VNI>, twill's): a later row must not trip over them.
      const links = JSON.parse((await sh(['ip', '-n', netns, '-j', 'link', 'show'])).stdout) as { ifname: string }[];
      for (const l of links) if (!['lo', 'eth0', 'eth0p'].includes(l.ifname)) await run(['ip', '-n', netns, 'link', 'del', l.ifname], { allowFailure: true });
      await etcdctl('del', '--prefix', `${PREFIX}/`);
      if (config !== undefined) await etcdctl('put', `${PREFIX}/config`, '--', config);
      rmSync(files.flanneld, { force: true });
      rmSync(files.twill, { force: true });
    },
    async leases() {
      return (await etcdctl('get', '--prefix', `${PREFIX}/subnets/`))
        .trim()
        .split('\n')
        .reduce<string[]>((out, line, i) => (i % 2 ? [...out.slice(0, -1), `${out.at(-1)} ${line}`] : [...out, line]), [])
        .join('\n');
    },
    async setMtu(mtu) {
      await sh(['ip', '-n', netns, 'link', 'set', 'eth0p', 'mtu', String(mtu)]);
      await sh(['ip', '-n', netns, 'link', 'set', 'eth0', 'mtu', String(mtu)]);
    },
    async flanneld(extra = [], hint) {
      const bin = flanneld().bin;
      if (hint !== undefined) writeFileSync(files.flanneld, hint);
      const p = startInNetns(netns, [
        bin,
        `--etcd-endpoints=${endpoint}`,
        `--etcd-prefix=${PREFIX}`,
        '--iface=eth0',
        `--subnet-file=${files.flanneld}`,
        ...extra,
      ]);
      return observe(p, files.flanneld, /Couldn't fetch network config: .*/, /^[EF]\d{4} /, 8000, hint);
    },
    async twill(extra = [], hint) {
      if (hint !== undefined) writeFileSync(files.twill, hint);
      const p = startInNetns(netns, [
        twillBin(),
        'agent',
        `--etcd-endpoints=${endpoint}`,
        `--etcd-prefix=${PREFIX}`,
        '--iface=eth0',
        `--subnet-file=${files.twill}`,
        `--pin-dir=${pinDir}`,
        '--dataplane=kernel',
        ...extra,
      ]);
      // Longer than flanneld's: node's start-up on a loaded machine; a config is still decided at the first sign.
      const o = await observe(p, files.twill, /waiting for a usable network config.*/, /^twill: |ERROR/, 15_000, hint);
      // The text log quotes values JSON-style: read the message as written.
      return o.kind === 'accepts' ? o : { ...o, message: o.message.replace(/\\"/g, '"') };
    },
    destroy,
  };
  return node;
}
