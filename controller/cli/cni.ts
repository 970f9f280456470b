import { readFileSync } from 'node:fs';
import { installCniPlugin } from '../cni/install.js';
import { parseSubnetFile } from '../subnet/subnet-file.js';
import { hostAddress } from '../net/ipv4.js';
import { parseArgs, UsageError } from './args.js';

/** `twill cni install`: puts the meta-plugin where a container runtime looks for plugins. */
export async function cniCli(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'install') throw new UsageError(`twill cni: unknown subcommand ${sub ?? '(none)'}; expected install`);
  const o = parseArgs(rest, {
    dir: { type: 'string', default: '/opt/cni/bin', describe: 'CNI plugin directory' },
    name: { type: 'string', default: 'flannel', describe: 'plugin name: flannel (drop-in) or twill' },
  });
  if (!/^[a-z][a-z0-9-]*$/.test(o.name)) throw new UsageError(`--name ${o.name}: not a plugin name`);
  console.log(`installed ${installCniPlugin(o.dir, o.name)}`);
  return 0;
}

/** `twill docker-opts`: Docker's options from the subnet file, as flannel's mk-docker-opts.sh prints them. */
export async function dockerOptsCli(argv: string[]): Promise<number> {
  const o = parseArgs(argv, { 'subnet-file': { type: 'string', default: '/run/flannel/subnet.env', describe: 'subnet file written by the agent' } });
  let text: string;
  try {
    text = readFileSync(o['subnet-file'], 'utf8');
  } catch (err) {
    throw new UsageError(`--subnet-file ${o['subnet-file']}: cannot read: ${(err as NodeJS.ErrnoException).code}`);
  }
  const env = parseSubnetFile(text);
  if (!env.subnet || env.mtu === undefined || env.ipMasq === undefined) throw new UsageError(`--subnet-file ${o['subnet-file']}: needs FLANNEL_SUBNET, FLANNEL_MTU and FLANNEL_IPMASQ`);
  const bip = `--bip=${hostAddress(env.subnet, 1)}/${env.subnet.len}`;
  // Docker masquerades only when flannel does not.
  const masq = `--ip-masq=${!env.ipMasq}`;
  const mtu = `--mtu=${env.mtu}`;
  console.log(`DOCKER_OPT_BIP="${bip}"\nDOCKER_OPT_IPMASQ="${masq}"\nDOCKER_OPT_MTU="${mtu}"\nDOCKER_OPTS=" ${bip} ${masq} ${mtu}"`);
  return 0;
}
