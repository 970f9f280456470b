import { readFileSync, writeFileSync } from 'node:fs';
import { installCniPlugin } from '../cni/install.js';
import { checkSubnetFile } from '../subnet/subnet-file.js';
import { hostAddress } from '../net/ipv4.js';
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
 * variable (-c), both when neither is asked for. As the script does, the combined value starts
 * with the variable's value in the environment, and DOCKER_OPT_* variables already in the
 * environment join ours in name order.
 */
export function dockerOptsFile(subnetFile: string, o: DockerOptsChoice, env: NodeJS.ProcessEnv): string {
  const { file: vars, problems } = checkSubnetFile(subnetFile);
  if (problems.length) throw new UsageError(problems.join('; '));
  if (!vars.subnet || vars.mtu === undefined || vars.ipMasq === undefined) throw new UsageError('needs FLANNEL_SUBNET, FLANNEL_MTU and FLANNEL_IPMASQ');
  const opts: Record<string, string> = Object.fromEntries(Object.entries(env).filter(([k, v]) => k.startsWith('DOCKER_OPT_') && v !== undefined)) as Record<string, string>;
  opts.DOCKER_OPT_BIP = `--bip=${hostAddress(vars.subnet, 1)}/${vars.subnet.len}`;
  opts.DOCKER_OPT_MTU = `--mtu=${vars.mtu}`;
  // Docker masquerades only when flannel does not.
  if (!o.noIpMasq) opts.DOCKER_OPT_IPMASQ = `--ip-masq=${!vars.ipMasq}`;
  else delete opts.DOCKER_OPT_IPMASQ;
  const both = !o.individual && !o.combined;
  const names = Object.keys(opts).sort();
  const lines = o.individual || both ? names.map((n) => `${n}="${opts[n]}"`) : [];
  const prefix = env[o.key] ? `${env[o.key]} ` : '';
  if (o.combined || both) lines.push(`${o.key}="${prefix}${names.map((n) => ` ${opts[n]}`).join('')}"`);
  return lines.map((l) => `${l}\n`).join('');
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
      throw new Error(`-d ${o.dest}: cannot write: ${(err as NodeJS.ErrnoException).code}`);
    }
  }
  return 0;
}
