import { readFileSync } from 'node:fs';

/*
 * The lab's detached processes (etcd members, agents, flanneld) are found again by pid, which
 * the kernel reuses: each is recognised by its command line before it is signalled.
 */

/** The process's command line (NUL-separated), or '' once it is gone. */
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** `signal` (SIGTERM, as an init system sends), then SIGKILL if it is still there after 5 s. */
export async function stopWhile(pid: number, alive: () => boolean, signal: NodeJS.Signals): Promise<void> {
  if (!alive()) return;
  process.kill(pid, signal);
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 50));
  if (alive()) process.kill(pid, 'SIGKILL');
}
