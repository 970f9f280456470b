import { readFileSync, writeFileSync } from 'node:fs';
import { installCniPlugin } from '../cni/install.js';
import { checkSubnetFile } from '../subnet/subnet-file.js';
import { formatCidr, hostAddress } from '../net/ipv4.js';
import { ipJson } from '../netlink/ip.js';
import { parseArgs, UsageError } from './args.js';
import { cniInstallOpts, dockerOptsOpts } from './options.js';

/** `twill cni install`: puts the meta-plugin where a container runtime looks for plugins. */
export async function cniCli(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'install') throw new UsageError(`twill cni: unknown subcommand ${sub ?? '(none)'}; expected install`);
  const o = parseArgs(rest, cniInstallOpts);
  if (!/^[a-z][a-z0-9-]*$/.test(o.name)) throw new UsageError(`--name ${o.name}: not a plugin name`);
  console.log(`installed ${installCniPlugin(o.dir, o.name)}`);
  return 0;
}

export interface DockerOptsChoice {
  key: string;
  combined: boolean;
  individual: boolean;
  noIpMasq: boolean;
}

/**
 * The env file flannel's mk-docker-opts.sh writes: DOCKER_OPT_* variables (-i), the combined
 * variable (-c), both when neither is asked for. As the script does, each option is there when
 * its subnet-file variable is (an IPv6-only file gives no --bip), the combined value starts with
 * the variable's value in the environment, and DOCKER_OPT_* variables already in the environment
 * join ours in name order (-m leaves out ours, not theirs). Unlike the script, a file with no
 * subnet at all is refused: the script would give Docker options without --bip.
 */
export function dockerOptsFile(subnetFile: string, o: DockerOptsChoice, env: NodeJS.ProcessEnv): string {
  const { file: vars, problems } = checkSubnetFile(subnetFile);
  if (problems.length) throw new UsageError(problems.join('; '));
  if (!vars.subnet && !vars.ipv6Subnet) throw new UsageError('has no FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET: not a subnet file the agent wrote');
  const opts: Record<string, string> = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith('DOCKER_OPT_') && v !== undefined)) as Record<
    string,
    string
  >;
  if (vars.subnet) opts.DOCKER_OPT_BIP = `--bip=${hostAddress(vars.subnet, 1)}/${vars.subnet.len}`;
  if (vars.mtu !== undefined) opts.DOCKER_OPT_MTU = `--mtu=${vars.mtu}`;
  // Docker masquerades only when flannel does not.
  if (!o.noIpMasq && vars.ipMasq !== undefined) opts.DOCKER_OPT_IPMASQ = `--ip-masq=${!vars.ipMasq}`;
  const both = !o.individual && !o.combined;
  const names = Object.keys(opts).sort();
  const lines = o.individual || both ? names.map((n) => `${n}="${opts[n]}"`) : [];
  const prefix = env[o.key] ? `${env[o.key]} ` : '';
  if (o.combined || both) lines.push(`${o.key}="${prefix}${names.map((n) => ` ${opts[n]}`).join('')}"`);
  return lines.map((l) => `${l}\n`).join('');
}

interface RouteEntry {
  dst: string;
  gateway?: string;
  nexthops?: { gateway?: string }[];
}

/**
 * Pure: mk-docker-opts.sh's last check, a route to this node's IPv4 subnet through a gateway
 * (`ip route show | grep <subnet> | grep via`): the subnet is routed to another node, so the
 * lease is stale or shared. Matched on the route's exact destination, where the script's grep
 * would match any line containing the text.
 */
export function routeToOwnSubnet(subnetFile: string, routes: readonly RouteEntry[]): string | undefined {
  const subnet = checkSubnetFile(subnetFile).file.subnet;
  if (!subnet) return undefined;
  const dst = formatCidr(subnet);
  const r = routes.find((e) => e.dst === dst && (e.gateway !== undefined || e.nexthops?.some((h) => h.gateway !== undefined)));
  return r && `${r.dst} via ${r.gateway ?? r.nexthops!.map((h) => h.gateway).join(',')}`;
}

/** `twill docker-opts`: mk-docker-opts.sh's job and options, from the agent's subnet file. */
export async function dockerOptsCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, dockerOptsOpts);
  if (o._.length) throw new UsageError(`unexpected argument ${o._[0]}`);
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(o.key)) throw new UsageError(`-k ${o.key}: not a shell variable name`);
  let text: string;
  try {
    text = readFileSync(o['subnet-file'], 'utf8');
  } catch (err) {
    throw new UsageError(`--subnet-file ${o['subnet-file']}: cannot read: ${(err as NodeJS.ErrnoException).code}`);
  }
  let out: string;
  try {
    out = dockerOptsFile(text, { key: o.key, combined: o.combined, individual: o.individual, noIpMasq: o['no-ip-masq'] }, process.env);
  } catch (err) {
    if (err instanceof UsageError) err.message = `--subnet-file ${o['subnet-file']}: ${err.message}`;
    throw err;
  }
  if (o.dest === '-') process.stdout.write(out);
  else {
    try {
      writeFileSync(o.dest, out);
    } catch (err) {
      throw new Error(`-d ${o.dest}: cannot write: ${(err as NodeJS.ErrnoException).code}`, { cause: err });
    }
  }
  // As the script: the file is written, then the command fails if our subnet is routed elsewhere.
  const conflict = routeToOwnSubnet(text, await ipJson<RouteEntry[]>(['-4', 'route', 'show']));
  if (conflict) throw new Error(`--subnet-file ${o['subnet-file']}: the routing table already has a route to this node's subnet: ${conflict}`);
  return 0;
}
