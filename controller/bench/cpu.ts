import { readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';

/*
 * CPU accounting from /proc: the whole machine (for CPU per packet, where softirq work on
 * behalf of the datapath counts) and per process (to tell the benchmark's own load from other
 * programs' load, which would distort every number).
 */

const PF_KTHREAD = 0x00200000;
// The benchmark's own user-space programs; kernel threads (softirq, workers) are datapath work.
const OWN = new Set(['iperf3', 'qperf', 'nsenter', 'taskset', 'tcpdump', 'ethtool', 'ip', 'perf']);

export function machineJiffies(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - f[4], total }; // idle + iowait
}

interface ProcCpu {
  comm: string;
  jiffies: number;
}

/** utime+stime of every user-space process that is not the benchmark or one of its tools. */
function otherProcesses(): Map<number, ProcCpu> {
  const out = new Map<number, ProcCpu>();
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const f = stat.slice(close + 2).split(' ');
    // after "pid (comm) ": state=0 ppid=1 ... flags=6 ... utime=11 stime=12
    if (Number(f[6]) & PF_KTHREAD || OWN.has(comm)) continue;
    out.set(pid, { comm, jiffies: Number(f[11]) + Number(f[12]) });
  }
  return out;
}

interface CpuWatch {
  /** Share of all CPUs (0..1) that other processes used since start, and the biggest of them. */
  stop(): { share: number; top: string };
}

export function watchOtherCpu(): CpuWatch {
  const before = otherProcesses();
  const t0 = process.hrtime.bigint();
  return {
    stop() {
      const after = otherProcesses();
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      const used: { pid: number; comm: string; jiffies: number }[] = [];
      for (const [pid, p] of after) used.push({ pid, comm: p.comm, jiffies: p.jiffies - (before.get(pid)?.jiffies ?? 0) });
      used.sort((a, b) => b.jiffies - a.jiffies);
      // USER_HZ is 100 on Linux: a jiffy is 10 ms.
      const total = used.reduce((a, u) => a + Math.max(0, u.jiffies), 0) / 100;
      const share = total / Math.max(1e-3, seconds * os.cpus().length);
      const top =
        used[0] && used[0].jiffies > 0 ? `${used[0].comm} (pid ${used[0].pid}, ${((used[0].jiffies / 100 / seconds) * 100).toFixed(0)}% of a CPU)` : 'none';
      return { share, top };
    },
  };
}

/** Other processes' share of the CPUs over `ms`: used to wait for a quiet machine before measuring. */
export async function otherCpuOver(ms: number): Promise<{ share: number; top: string }> {
  const w = watchOtherCpu();
  await new Promise((r) => setTimeout(r, ms));
  return w.stop();
}
