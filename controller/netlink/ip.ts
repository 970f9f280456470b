import { run } from '../util/exec.js';

/**
 * iproute2 is twill's netlink edge: every link, address and route change goes through `ip`,
 * so what twill does can be replayed and inspected with the same tool an operator uses.
 */
interface IpOptions {
  /** Named network namespace (`ip -n`); omitted = the caller's own namespace. */
  netns?: string;
}

function ipArgv(args: readonly string[], opts: IpOptions): string[] {
  return opts.netns ? ['ip', '-n', opts.netns, ...args] : ['ip', ...args];
}

export async function ip(args: readonly string[], opts: IpOptions = {}): Promise<string> {
  return (await run(ipArgv(args, opts))).stdout;
}

export async function ipJson<T>(args: readonly string[], opts: IpOptions = {}): Promise<T> {
  const out = await ip(['-j', ...args], opts);
  return (out.trim() ? JSON.parse(out) : []) as T;
}

/** Applies many commands in one `ip -batch` run; the batch stops at the first failing line. */
export async function ipBatch(lines: readonly string[], opts: IpOptions = {}): Promise<void> {
  if (lines.length === 0) return;
  await run(ipArgv(['-batch', '-'], opts), { input: lines.join('\n') + '\n' });
}

interface LinkInfo {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  link_type?: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
}

export async function linkShow(name: string, opts: IpOptions = {}): Promise<LinkInfo | undefined> {
  const res = await run(ipArgv(['-j', '-d', 'link', 'show', 'dev', name], opts), { allowFailure: true });
  if (res.code !== 0) return undefined;
  const links = JSON.parse(res.stdout) as LinkInfo[];
  return links[0];
}
