import { spawn } from 'node:child_process';
import { existsSync, openSync, readFileSync } from 'node:fs';
import { twillBin } from '../util/paths.js';

/** One `twill agent` per lab node, detached so it outlives `twill lab up`, stopped by pid. */
export interface AgentProcess {
  pid: number;
  log: string;
  healthz: string;
}

export function startAgent(opts: { netns: string; args: string[]; logFile: string; healthz: string }): AgentProcess {
  const log = openSync(opts.logFile, 'a');
  // Through bin/twill, as an operator runs it, so the lab's agents get its V8 flags too.
  const child = spawn('nsenter', [`--net=/run/netns/${opts.netns}`, '--', twillBin(), 'agent', ...opts.args], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.unref();
  return { pid: child.pid!, log: opts.logFile, healthz: opts.healthz };
}

/** True while `pid` is still a twill agent with this pin directory (pids get reused). */
export function isAgent(pid: number, pinDir: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('agent') && cmdline.includes(pinDir);
  } catch {
    return false;
  }
}

export async function stopAgent(pid: number, pinDir: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!isAgent(pid, pinDir)) return;
  process.kill(pid, signal);
  for (let i = 0; i < 100 && isAgent(pid, pinDir); i++) await new Promise((r) => setTimeout(r, 50));
  if (isAgent(pid, pinDir)) process.kill(pid, 'SIGKILL');
}

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
