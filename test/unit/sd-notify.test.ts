import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sdNotify } from '../../controller/agent/sd-notify.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'twill-notify-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sdNotify', () => {
  it('does nothing without NOTIFY_SOCKET', () => {
    expect(sdNotify('READY=1', undefined)).toBe(false);
  });

  it('delivers READY=1 to a real AF_UNIX datagram socket', async () => {
    const sock = path.join(dir, 'notify.sock');
    // A python listener stands in for systemd: it binds the socket and prints what arrives.
    const listener = spawn('/usr/bin/python3', [
      '-c',
      `import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\nprint(s.recv(100).decode(),flush=True)`,
      sock,
    ]);
    let out = '';
    listener.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise<void>((r) => listener.stdout.once('data', () => r()));
    expect(sdNotify('READY=1\nSTATUS=subnet 10.244.1.0/24', sock)).toBe(true);
    await new Promise((r) => listener.on('close', r));
    expect(out).toContain('READY=1\nSTATUS=subnet 10.244.1.0/24');
  });

  it('throws naming the socket when nobody listens', () => {
    expect(() => sdNotify('READY=1', path.join(dir, 'absent.sock'))).toThrow(/absent.sock failed/);
  });
});
