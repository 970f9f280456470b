import path from 'node:path';
import type { LabPod } from '../../controller/lab/state.js';
import { run } from '../../controller/util/exec.js';
import { repoRoot } from './build.js';
import { startInNetns } from './proc.js';

const transfer = path.join(repoRoot, 'test/support/tcp-transfer.py');
const listen = path.join(repoRoot, 'test/support/udp-listen.py');

export function ping(fromNetns: string, to: string, count = 1) {
  return run(['ping', '-c', String(count), '-W', '2', '-i', '0.2', to], { netns: fromNetns, allowFailure: true });
}

/** Sends `bytes` over TCP (to `addr`, one of the server's addresses); returns "<count> <sha256>" as the sender and the receiver saw them. */
export async function tcpTransfer(
  client: Pick<LabPod, 'netns'>,
  server: Pick<LabPod, 'netns' | 'ip'>,
  bytes: number,
  port = 5301,
  addr = server.ip,
): Promise<{ sent: string; received: string }> {
  const sink = startInNetns(server.netns, ['/usr/bin/python3', transfer, 'sink', String(port)]);
  try {
    await sink.waitFor(/listening/);
    const sent = (await run(['/usr/bin/python3', transfer, 'send', addr, String(port), String(bytes)], { netns: client.netns })).stdout.trim();
    await sink.exited;
    return { sent, received: sink.output().split('\n')[1]?.trim() ?? '' };
  } finally {
    sink.kill();
  }
}

/** One UDP datagram from client to server (to `addr`, one of its addresses); true when it arrived. */
export async function udpProbe(client: LabPod, server: LabPod, port = 9998, addr = server.ip): Promise<boolean> {
  const text = `udp-${client.name}-${server.name}`;
  const listener = startInNetns(server.netns, ['/usr/bin/python3', listen, String(port), text, '3']);
  await listener.waitFor(/listening/);
  await run(
    [
      '/usr/bin/python3',
      '-c',
      `import socket; socket.socket(socket.AF_INET6 if ":" in "${addr}" else socket.AF_INET, socket.SOCK_DGRAM).sendto(b"${text}", ("${addr}", ${port}))`,
    ],
    { netns: client.netns },
  );
  await listener.exited;
  return listener.output().includes(text);
}
