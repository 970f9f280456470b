import type { LogFormat } from './log.js';
import { UsageError } from './usage-error.js';

/**
 * Takes the global flags off the command line. The agent keeps -v: flanneld's -v=N is its own
 * flag there, parsed with the rest of flanneld's flags. Outside the CLI so that whoever reads a
 * twill command line (the CLI, uninstall finding a running agent) reads it the same way.
 */
export function takeGlobalFlags(argv: readonly string[]): { argv: string[]; logFormat?: LogFormat; verbose: boolean } {
  const out: string[] = [];
  let logFormat: string | undefined;
  let verbose = false;
  for (let i = 0; i < argv.length; i++) {
    const m = /^--?log-format(?:=(.*))?$/.exec(argv[i]);
    if (m) {
      logFormat = m[1] ?? argv[++i];
      if (logFormat !== 'text' && logFormat !== 'json') throw new UsageError(`--log-format ${logFormat ?? '(none)'}: expected text or json`);
    } else if (argv[i] === '-v' && argv[0] !== 'agent') verbose = true;
    else out.push(argv[i]);
  }
  return { argv: out, logFormat: logFormat as LogFormat | undefined, verbose };
}
