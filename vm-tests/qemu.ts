import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

/*
 * One QEMU guest of the VM tier: TCG (this machine's KVM cannot boot stock kernels), the cached
 * Debian image booted read-only (snapshot=on, so guests share it), its NIC on a tap in the test's
 * network namespace, the host checkout shared over 9p, and commands run over a virtio-serial
 * port served by the guest's init (vm-tests/guest/twill-vm-init).
 */
export interface GuestSpec {
  name: string;
  /** Underlay address with prefix, e.g. 192.168.79.1/24. */
  address: string;
  mac: string;
  /** Existing tap device in `netns` the guest's eth0 is plugged into. */
  tap: string;
  netns: string;
  image: string;
  /** One of the image's kernels (a name under image/kernels, e.g. 6.1.0-50-amd64); the newest if absent. */
  kernel?: string;
  /** Host directory shared read-only; the guest mounts it at GUEST_SHARE. */
  share: string;
  runDir: string;
  memoryMb?: number;
}

/** Where guests mount the host's checkout (not the host's path: that may lie under /tmp or /run, which guests mount over). */
export const GUEST_SHARE = '/twill';

export interface ExecResult {
  code: number;
  output: string;
}

/** node_modules when it is a link out of the share (a worktree using another checkout's): its target. */
function outsideDeps(share: string): string | undefined {
  const link = path.join(share, 'node_modules');
  if (!existsSync(link) || !lstatSync(link).isSymbolicLink()) return undefined;
  const target = realpathSync(link);
  return target.startsWith(`${realpathSync(share)}/`) ? undefined : target;
}

export class GuestError extends Error {
  override name = 'GuestError';
}

export class Guest {
  private child: ChildProcess;
  private socket?: net.Socket;
  private buffered = '';
  private nextId = 1;
  private readonly waiting = new Map<number, (r: ExecResult) => void>();
  readonly consoleLog: string;
  readonly ip: string;

  private constructor(readonly spec: GuestSpec) {
    mkdirSync(spec.runDir, { recursive: true });
    this.consoleLog = path.join(spec.runDir, `${spec.name}.console.log`);
    this.ip = spec.address.split('/')[0];
    const deps = outsideDeps(spec.share);
    const append = [
      // no_timer_check: under TCG on a loaded host the IO-APIC timer check can miss its ticks and panic the boot.
      'root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 quiet loglevel=4 no_timer_check',
      'init=/usr/local/sbin/twill-vm-init',
      `twill.hostname=${spec.name} twill.ip=${spec.address} twill.share=${GUEST_SHARE}`,
      ...(deps ? [`twill.deps=${deps}`] : []),
    ].join(' ');
    const boot = spec.kernel ? path.join(spec.image, 'kernels', spec.kernel) : spec.image;
    const argv = [
      'qemu-system-x86_64',
      '-name',
      spec.name,
      '-nodefaults',
      '-display',
      'none',
      '-no-reboot',
      '-accel',
      'tcg,thread=multi,tb-size=128',
      '-cpu',
      'max',
      '-smp',
      '1',
      '-m',
      String(spec.memoryMb ?? 768),
      '-kernel',
      path.join(boot, 'vmlinuz'),
      '-initrd',
      path.join(boot, 'initrd-fast.img'),
      '-append',
      append,
      '-drive',
      `file=${path.join(spec.image, 'rootfs.ext4')},if=virtio,format=raw,snapshot=on`,
      '-netdev',
      `tap,id=underlay,ifname=${spec.tap},script=no,downscript=no`,
      '-device',
      `virtio-net-pci,netdev=underlay,mac=${spec.mac}`,
      '-virtfs',
      `local,path=${spec.share},mount_tag=twill,security_model=none,readonly=on`,
      ...(deps ? ['-virtfs', `local,path=${deps},mount_tag=twill-deps,security_model=none,readonly=on`] : []),
      '-device',
      'virtio-serial-pci',
      '-chardev',
      `socket,id=ctl,path=${this.controlPath},server=on,wait=off`,
      '-device',
      'virtserialport,chardev=ctl,name=twill.ctl',
      '-serial',
      `file:${this.consoleLog}`,
      '-pidfile',
      path.join(spec.runDir, `${spec.name}.pid`),
    ];
    rmSync(this.controlPath, { force: true });
    this.child = spawn('nsenter', [`--net=/run/netns/${spec.netns}`, '--', ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    this.child.on('close', (code) => {
      const err: ExecResult = { code: -1, output: `qemu for ${spec.name} exited (${code ?? 'signal'}): ${stderr.trim()}\n${this.consoleTail()}` };
      for (const resolve of this.waiting.values()) resolve(err);
      this.waiting.clear();
    });
  }

  /**
   * Kills guests a previous run left behind (its test process was killed before afterAll), found
   * by their pid files in runDir: only a QEMU whose command line names that pid file is killed.
   */
  static killLeftovers(runDir: string): void {
    if (!existsSync(runDir)) return;
    for (const file of readdirSync(runDir).filter((f) => f.endsWith('.pid'))) {
      const pidFile = path.join(runDir, file);
      const pid = Number(readFileSync(pidFile, 'utf8').trim());
      const cmdline = existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0') : [];
      if (cmdline[0]?.endsWith('qemu-system-x86_64') && cmdline.includes(pidFile)) process.kill(pid, 'SIGKILL');
    }
  }

  private get controlPath(): string {
    return path.join(this.spec.runDir, `${this.spec.name}.ctl`);
  }

  private get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  consoleTail(lines = 30): string {
    if (!existsSync(this.consoleLog)) return '(no console output)';
    return readFileSync(this.consoleLog, 'utf8').split('\n').slice(-lines).join('\n');
  }

  /** Starts the guest and resolves once its init answers on the control port. */
  static async boot(spec: GuestSpec, timeoutMs: number): Promise<Guest> {
    const guest = new Guest(spec);
    const deadline = Date.now() + timeoutMs;
    while (!guest.socket) {
      if (!guest.running || Date.now() > deadline) break;
      await guest.connect().catch(() => new Promise((r) => setTimeout(r, 200)));
    }
    const first = await guest.exec('echo ready', Math.max(deadline - Date.now(), 1));
    if (first.output.trim() !== 'ready') {
      await guest.stop();
      throw new GuestError(`${spec.name} did not come up: ${first.output}\nconsole:\n${guest.consoleTail()}`);
    }
    return guest;
  }

  private connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.controlPath);
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        sock.on('error', () => undefined); // the close handler of the qemu process reports failures
        sock.setEncoding('utf8').on('data', (d: string) => this.onData(d));
        this.socket = sock;
        resolve();
      });
    });
  }

  private onData(data: string): void {
    this.buffered += data;
    let nl: number;
    while ((nl = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, nl);
      this.buffered = this.buffered.slice(nl + 1);
      const [id, code, out = ''] = line.split(' ');
      const resolve = this.waiting.get(Number(id));
      this.waiting.delete(Number(id));
      resolve?.({ code: Number(code), output: Buffer.from(out, 'base64').toString('utf8') });
    }
  }

  /** Runs a bash script in the guest; output is stdout and stderr together. */
  exec(script: string, timeoutMs = 120_000): Promise<ExecResult> {
    if (!this.socket || !this.running) return Promise.resolve({ code: -1, output: `${this.spec.name} is not running\n${this.consoleTail()}` });
    const id = this.nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ code: -1, output: `timed out after ${timeoutMs} ms in ${this.spec.name}: ${script}` });
      }, timeoutMs);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        resolve(r);
      });
      this.socket!.write(`${id} ${Buffer.from(script).toString('base64')}\n`);
    });
  }

  /** Like exec, but a non-zero exit is an error naming the guest, the script and its output. */
  async sh(script: string, timeoutMs?: number): Promise<string> {
    const r = await this.exec(script, timeoutMs);
    if (r.code !== 0) throw new GuestError(`${this.spec.name}: \`${script}\` failed (${r.code}): ${r.output.trim()}`);
    return r.output;
  }

  /** Kills QEMU (the disk is a snapshot, so nothing in the guest needs a clean shutdown). */
  async stop(): Promise<void> {
    this.socket?.destroy();
    if (!this.running) return;
    const closed = new Promise((r) => this.child.once('close', r));
    this.child.kill('SIGKILL');
    await closed;
  }
}
