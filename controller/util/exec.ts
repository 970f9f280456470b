import { spawn } from 'node:child_process';

class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly code: number | null,
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')} failed (exit ${code ?? 'signal'}): ${stderr.trim() || 'no output'}`);
    this.name = 'CommandError';
  }
}

interface RunOptions {
  input?: string;
  env?: NodeJS.ProcessEnv;
  /** Run inside this named network namespace (via nsenter, which keeps /sys/fs/bpf visible). */
  netns?: string;
  /** Resolve instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program without a shell; the edge through which twill drives iproute2, CNI plugins and friends. */
export function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const full = opts.netns ? ['nsenter', `--net=/run/netns/${opts.netns}`, '--', ...argv] : [...argv];
  return new Promise((resolve, reject) => {
    const child = spawn(full[0], full.slice(1), { env: opts.env ?? process.env, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0 && !opts.allowFailure) reject(new CommandError(full, code, stderr || stdout));
      else resolve({ code, stdout, stderr });
    });
    if (child.stdin) {
      // A program may exit without reading all of its input; its exit code tells what happened.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/** One argument as a POSIX shell reads it back: quoted where it is empty or holds anything a shell would take apart. */
export const shellWord = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
