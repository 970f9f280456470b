import { takeGlobalFlags } from '../util/global-flags.js';
import { setLogFormat, setLogLevel } from '../util/log.js';
import { twillVersion } from '../util/paths.js';
import { UsageError } from './args.js';
import { commandHelp, findCommand, groupHelp, subcommands, topHelp } from './commands.js';

const isHelp = (a: string) => a === '--help' || a === '-h' || a === '-help';

/** Runs one twill command line; the exit status, or a UsageError (status 2) naming what is wrong. */
export async function runCli(args: readonly string[]): Promise<number> {
  const { argv, logFormat, verbose } = takeGlobalFlags(args);
  if (logFormat) setLogFormat(logFormat);
  if (verbose) setLogLevel('info');
  const [first] = argv;
  if (first === 'version' || first === '--version') {
    console.log(`twill ${twillVersion()}`);
    return 0;
  }
  if (first === undefined || first === 'help' || isHelp(first)) {
    console.log(topHelp());
    return first === undefined ? 2 : 0;
  }
  const found = findCommand(argv);
  const wantsHelp = argv.some(isHelp);
  if (!found) {
    // The longest group the words name: `lab pod x` is in `lab pod`, `lab x` in `lab`.
    const group = [argv.slice(0, 2), argv.slice(0, 1)].find((p) => subcommands(p).length > 0);
    if (!group) throw new UsageError(`unknown command ${first}\n\n${topHelp()}`);
    if (wantsHelp) {
      console.log(groupHelp(group));
      return 0;
    }
    const next = [...new Set(subcommands(group).map((c) => c.name.split(' ')[group.length]))];
    throw new UsageError(`twill ${group.join(' ')}: unknown subcommand ${argv[group.length] ?? '(none)'}; expected ${next.join(', ')}`);
  }
  if (wantsHelp) {
    console.log(commandHelp(found.command));
    return 0;
  }
  try {
    return await found.command.run(found.rest);
  } catch (err) {
    if (err instanceof UsageError) err.message += `\n(twill ${found.command.name} --help lists its flags)`;
    throw err;
  }
}
