import { UsageError } from './cli/args.js';
import { runCli } from './cli/main.js';
import { logger } from './util/log.js';

const log = logger('cli');

runCli(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      console.error(`twill: ${err.message}`);
      process.exit(2);
    }
    // The message already carries the context (and a BpfError its verifier log); the stack only with -v.
    log.info('command failed', { stack: err instanceof Error ? err.stack : undefined });
    console.error(`twill: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
