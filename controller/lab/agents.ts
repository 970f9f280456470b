import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { twillBin } from '../util/paths.js';
import { imageAgentCommand } from './image.js';
import { cmdline, stopWhile } from './processes.js';

/**
 * One node daemon per lab node, `twill agent` or the real flanneld, detached so it outlives
 * `twill lab up`, stopped by pid.
 */
export interface AgentProcess {
  pid: number;
  log: string;
  healthz: string;
}

interface DaemonOptions {
  netns: string;
  args: string[];
  logFile: string;
  healthz: string;
  /** added to the environment */
  env?: Record<string, string>;
}

/** Starts `command` (which enters the node's namespace itself) with the daemon's flags. */
function startDaemon(command: string[], opts: DaemonOptions): AgentProcess {
  const log = openSync(opts.logFile, 'a');
  const [program, ...args] = [...command, ...opts.args];
  const child = spawn(program, args, {
    detached: true,
    stdio: ['ignore', log, log],
    env: opts.env ? { ...process.env, ...opts.env } : process.env,
  });
  child.unref();
  return { pid: child.pid!, log: opts.logFile, healthz: opts.healthz };
}

const inNetns = (netns: string, command: string[]) => ['nsenter', `--net=/run/netns/${netns}`, '--', ...command];

// Through bin/twill, as an operator runs it, so the lab's agents get its V8 flags too.
export const startAgent = (opts: DaemonOptions): AgentProcess => startDaemon(inNetns(opts.netns, [twillBin(), 'agent']), opts);

/**
 * The agent of the container image `image`, by podman in the node's namespace, run by the
 * image's entrypoint as the DaemonSet runs it; the env goes into the container. Its pid is
 * podman's, which passes SIGTERM on to the agent and whose command line holds the agent's flags,
 * so isAgent and stopAgent recognise it as they do a host agent.
 */
export const startImageAgent = (image: string, opts: DaemonOptions): AgentProcess =>
  startDaemon(imageAgentCommand(image, opts, opts.env), { ...opts, env: undefined });

/** flanneld itself (the binary `bin`), with the flags it is given. */
export const startFlanneld = (bin: string, opts: DaemonOptions): AgentProcess => startDaemon(inNetns(opts.netns, [bin]), opts);

/** True while `pid` is still a twill agent with this pin directory (pids get reused). */
export function isAgent(pid: number, pinDir: string): boolean {
  const c = cmdline(pid);
  return c.includes('agent') && c.includes(pinDir);
}

/** True while `pid` is still a flanneld writing `subnetFile`. */
export function isFlanneld(pid: number, subnetFile: string): boolean {
  const c = cmdline(pid);
  return c.includes('flanneld') && c.includes(subnetFile);
}

export const stopAgent = (pid: number, pinDir: string, signal: NodeJS.Signals = 'SIGTERM') => stopWhile(pid, () => isAgent(pid, pinDir), signal);
export const stopFlanneld = (pid: number, subnetFile: string, signal: NodeJS.Signals = 'SIGTERM') => stopWhile(pid, () => isFlanneld(pid, subnetFile), signal);

/**
 * Whether the process is still there. Right after spawn() the child has not exec'd yet and
 * its cmdline is still its parent's, so waits check existence rather than isAgent().
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until the agent has written its subnet file (it does so once the datapath is programmed). */
export async function waitForSubnetFile(file: string, pid: number, logFile: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(file)) return readFileSync(file, 'utf8');
    if (!pidAlive(pid)) throw new Error(`agent ${pid} exited before it was ready; log ${logFile}:\n${tail(logFile)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`agent ${pid} not ready after ${timeoutMs} ms; log ${logFile}:\n${tail(logFile)}`);
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-12).join('\n');
  } catch {
    return '(no log)';
  }
}
