import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../controller/util/exec.js';
import { ipBatch } from '../../controller/netlink/ip.js';
import { buildTs, cliPath } from '../support/build.js';

/*
 * `twill probe` on this host's kernel: what it finds agrees with the kernel's version, the
 * throwaway namespace of the tcx probe is gone afterwards, and native XDP is probed on a veth
 * (which has it) in a namespace of the test's own, tkm-itest.
 */
const NETNS = 'tkm-itest';
const [major, minor] = os.release().split('.').map(Number);
const atLeast = (ma: number, mi: number) => major > ma || (major === ma && minor >= mi);
const probeJson = async (args: string[] = [], netns?: string) =>
  JSON.parse((await run([process.execPath, cliPath, 'probe', '--json', ...args], { netns })).stdout);
const probeNamespaces = async () => (await run(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => /^tkm-\d+/.test(l));

beforeAll(async () => {
  buildTs();
  await run(['ip', 'netns', 'del', NETNS], { allowFailure: true });
  await run(['ip', 'netns', 'add', NETNS]);
  await ipBatch(['link add tkm-a type veth peer name tkm-b', 'link set tkm-a up', 'link set tkm-b up'], { netns: NETNS });
});

afterAll(async () => {
  await run(['ip', 'netns', 'del', NETNS], { allowFailure: true });
});

describe('twill probe', () => {
  it('finds on this kernel what its version promises, and leaves no namespace behind', async () => {
    const before = await probeNamespaces();
    const p = await probeJson();
    expect(p.kernel).toBe(os.release());
    const present = Object.fromEntries(Object.entries(p.capabilities as Record<string, { present: boolean }>).map(([k, c]) => [k, c.present]));
    expect(present).toEqual({
      btf: true,
      tcx: atLeast(6, 6),
      redirectPeer: atLeast(5, 10),
      redirectNeigh: atLeast(5, 10),
      checkMtu: atLeast(5, 12),
      conntrackKfuncs: atLeast(5, 19),
      ringbuf: atLeast(5, 8),
    });
    expect(p.auto).toMatchObject({ requested: 'auto', dataplane: 'bpf', attach: atLeast(6, 6) ? 'tcx' : 'clsact' });
    expect(await probeNamespaces()).toEqual(before);
  });

  it('probes native XDP on a veth by attaching and removing it, and auto still puts decap in tc there', async () => {
    const p = await probeJson(['--iface', 'tkm-a'], NETNS);
    expect(p.capabilities.xdpNative).toMatchObject({ present: true, detail: expect.stringMatching(/attached and removed/) });
    expect(p.auto).toMatchObject({ decap: 'tc', reasons: { decap: expect.stringMatching(/veth/) } });
    const link = JSON.parse((await run(['ip', '-n', NETNS, '-j', 'link', 'show', 'dev', 'tkm-a'])).stdout);
    expect(link[0].xdp).toBeUndefined();
  });

  it('names a missing interface', async () => {
    const r = await run([process.execPath, cliPath, 'probe', '--iface', 'tkm-nope'], { netns: NETNS, allowFailure: true });
    expect({ code: r.code, stderr: r.stderr.trim() }).toEqual({ code: 1, stderr: 'twill: --iface tkm-nope: no such interface in this network namespace' });
  });
});
