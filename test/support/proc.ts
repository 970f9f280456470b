import { spawn, type ChildProcess } from 'node:child_process';

/** A process the test started in one of its namespaces; it is killed by `stopAll` if still running. */
export interface Background {
  child: ChildProcess;
  output(): string;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

const started = new Set<ChildProcess>();

export function startInNetns(netns: string | undefined, argv: string[]): Background {
  const full = netns ? ['nsenter', `--net=/run/netns/${netns}`, '--', ...argv] : argv;
  const child = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(child);
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const l of listeners) l();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      started.delete(child);
      for (const l of listeners) l();
      resolve(code);
    }),
  );
  return {
    child,
    output: () => out,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitFor: (pattern, timeoutMs = 10_000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pattern.test(out)) {
            cleanup();
            resolve();
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup();
            reject(new Error(`${argv.join(' ')} exited before printing ${pattern}: ${out.slice(-500)}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for ${pattern} from ${argv.join(' ')}: ${out.slice(-500)}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      }),
  };
}

export async function stopAll(): Promise<void> {
  const waits = [...started].map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.on('close', r))));
  for (const c of started) c.kill('SIGKILL');
  await Promise.all(waits);
}
