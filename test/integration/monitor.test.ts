import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfMap } from '../../controller/bpf/libbpf.js';
import { RingBuffer } from '../../controller/bpf/ringbuf.js';
import type { LabState } from '../../controller/lab/state.js';
import { MonitorSwitch, pidNamespace, processStart } from '../../controller/monitor/control.js';
import { decodeEvent, type MonitorEvent } from '../../controller/monitor/events.js';
import { run } from '../../controller/util/exec.js';
import { EVENTS_MAP, MONITOR_DROPS, MONITOR_TRACE, type MonitorControl } from '../../maps/layout.js';
import { buildBpf, buildTs, cliPath, repoRoot } from '../support/build.js';
import { startInNetns, stopAll, type Background } from '../support/proc.js';
import { ping } from '../support/traffic.js';

/*
 * `twill monitor` against real 2-node labs: "tm" (IPv4, decap at tc, on 192.168.114.0/24), then
 * "tmx" (dual stack, decap in XDP, on 192.168.115.0/24). Hostile VXLAN from scapy, real pod
 * traffic, the real ring buffer. Every event is read on node n1.
 */
const LAB = 'tm';
const XDP_LAB = 'tmx';
const twill = (args: string[]) => run([process.execPath, cliPath, ...args]);
const craft = path.join(repoRoot, 'test/support/craft.py');
const craft6 = path.join(repoRoot, 'test/support/craft6.py');

/** The lab the helpers below act on: "tm", then "tmx" for the last block. */
let lab: LabState;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;
/** Where craft.py's inner-dst-elsewhere packet goes: n1's pod address with the third octet's top bit flipped, another node's /24. */
const elsewhere = () => {
  const [a, b, c] = pod('n1-p1').ip.split('.');
  return `${a}.${b}.${Number(c) ^ 128}.9`;
};
const pinDir = () => node('n1').pinDir;

/** A crafted VXLAN packet to n1's pod, sent from `fromNetns` with outer source `src`. */
const send = (fromNetns: string, src: string, kind: string) =>
  run(['/usr/bin/python3', craft, kind, src, node('n1').underlayIp, pod('n1-p1').ip, '1', '8472', node('n1').vtepMac], { netns: fromNetns });
const fromPeer = (kind: string) => send(node('n2').netns, node('n2').underlayIp, kind);
const fromStranger = (kind: string) => send(lab.underlay.netns, lab.underlay.gateway, kind);

function monitorSwitch(): MonitorControl {
  const sw = MonitorSwitch.open(pinDir())!;
  try {
    return sw.read();
  } finally {
    sw.close();
  }
}

function setSwitch(c: Partial<MonitorControl>): void {
  const sw = MonitorSwitch.open(pinDir())!;
  try {
    sw.write({ ...sw.read(), ...c });
  } finally {
    sw.close();
  }
}

/** The ring buffer, read directly: what the programs wrote, before any filter. */
function withRing<T>(fn: (ring: RingBuffer) => T): T {
  const map = BpfMap.fromPin(`${pinDir()}/${EVENTS_MAP}`);
  const ring = new RingBuffer(map.fd, EVENTS_MAP);
  try {
    return fn(ring);
  } finally {
    ring.close();
    map.close();
  }
}
const decodeCtx = { vxlanPort: 8472, wallOffsetNs: 0n, peerBySlot: () => undefined };
const drain = () => withRing((r) => r.consume());
const readRing = (): MonitorEvent[] => withRing((r) => r.consume().map((rec) => decodeEvent(rec, decodeCtx)));

async function startMonitor(args: string[]): Promise<Background> {
  const m = startInNetns(undefined, [process.execPath, cliPath, 'monitor', '--pin-dir', pinDir(), ...args]);
  await m.waitFor(/listening for/);
  return m;
}
const jsonEvents = (m: Background): MonitorEvent[] =>
  m
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as MonitorEvent);

const mapsDoc = async () =>
  JSON.parse((await twill(['maps', '--pin-dir', pinDir(), '--json'])).stdout) as { stats: Record<string, number>; monitor: Record<string, unknown> };
const stats = async () => (await mapsDoc()).stats;

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !cond(); i++) await new Promise((r) => setTimeout(r, 200));
  if (!cond()) throw new Error(`still waiting for ${what}`);
}

beforeAll(async () => {
  buildBpf();
  buildTs();
  await twill(['lab', 'down', '--name', LAB]).catch(() => undefined);
  await twill(['lab', 'up', '--name', LAB, '--nodes', '2', '--pods-per-node', '1', '--underlay', '192.168.114.0/24']);
  lab = JSON.parse((await twill(['lab', 'status', '--name', LAB, '--json'])).stdout) as LabState;
}, 240_000);

afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
  await twill(['lab', 'down', '--name', XDP_LAB]);
}, 120_000);

describe('nobody listening', () => {
  it('the switch is off and a drop is counted but writes no event', async () => {
    expect(monitorSwitch().flags).toBe(0);
    expect((await mapsDoc()).monitor).toEqual({ drops: false, trace: false, traceSample: 0, ownerPid: 0, lost: 0 });
    expect((await twill(['maps', '--pin-dir', pinDir()])).stdout).toContain('twill_monitor  off (no twill monitor listening)');
    const bad = await run([process.execPath, cliPath, 'monitor', '--pin-dir', pinDir(), '--reason', 'drop_bogus'], { allowFailure: true });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--reason drop_bogus: not a reason of --type drop events');
    expect(monitorSwitch().flags).toBe(0);
    drain();
    const before = await stats();
    await fromPeer('bad-vni');
    expect((await stats()).drop_bad_vni - before.drop_bad_vni).toBe(1);
    expect(drain()).toEqual([]);
  });
});

describe('drops', () => {
  it('every drop, with the reason twill maps counts it under, the hook, the outer and inner addresses and the peer', async () => {
    const before = await stats();
    const m = await startMonitor(['--json', '--count', '4']);
    await fromPeer('bad-vni');
    await fromPeer('ip-options');
    await fromPeer('inner-dst-elsewhere');
    await fromStranger('good');
    expect(await m.exited).toBe(0);
    const after = await stats();
    const [n1, n2] = [node('n1'), node('n2')];
    const inner = { family: 4, src: '10.244.2.77', protocol: 'udp', dport: 9999 };
    const events = jsonEvents(m);
    expect(events).toHaveLength(4);
    expect(events[0]).toMatchObject({
      kind: 'drop',
      reason: 'drop_bad_vni',
      hook: 'tc-decap',
      program: 'twill_decap_tc',
      outer: { family: 4, src: n2.underlayIp, dst: n1.underlayIp, vni: 2 },
      inner: { ...inner, dst: pod('n1-p1').ip },
      peer: { publicIp: n2.underlayIp },
    });
    expect(events[0].peer.slot).toBeGreaterThan(0);
    expect(events[1]).toMatchObject({
      reason: 'drop_ip_options',
      hook: 'tc-decap',
      outer: { src: n2.underlayIp, dst: n1.underlayIp },
      inner: { ...inner, dst: pod('n1-p1').ip },
      peer: { publicIp: n2.underlayIp },
    });
    expect(events[2]).toMatchObject({
      reason: 'drop_inner_dst',
      outer: { src: n2.underlayIp, vni: 1 },
      inner: { ...inner, dst: elsewhere() },
      peer: { slot: events[0].peer.slot, publicIp: n2.underlayIp },
    });
    expect(events[3]).toMatchObject({
      reason: 'drop_unknown_source',
      outer: { src: lab.underlay.gateway, dst: n1.underlayIp },
      peer: { slot: 0, publicIp: lab.underlay.gateway },
    });
    // The names are twill_stats' own, and each event is one count there.
    for (const e of events) expect(after[e.reason] - before[e.reason], e.reason).toBe(events.filter((x) => x.reason === e.reason).length);
    expect(monitorSwitch().flags).toBe(0);
  });

  it('from twill_tunnel_rx (reassembled VXLAN from no peer): the outer addresses from the tunnel key', async () => {
    const m = await startMonitor(['--json', '--count', '1']);
    await fromStranger('fragment');
    expect(await m.exited).toBe(0);
    expect(jsonEvents(m)).toMatchObject([
      {
        reason: 'drop_unknown_source',
        hook: 'tunnel-rx',
        program: 'twill_tunnel_rx',
        outer: { family: 4, src: lab.underlay.gateway, dst: node('n1').underlayIp },
        inner: { src: '10.244.2.77', dst: pod('n1-p1').ip, protocol: 'udp' },
        peer: { slot: 0, publicIp: lab.underlay.gateway },
      },
    ]);
  });

  it('--reason and --address pass only what matches both; text is one line per event', async () => {
    const m = await startMonitor(['--reason', 'drop_inner_dst,drop_bad_vni', '--address', `${elsewhere().replace(/\.9$/, '.0')}/24`, '--count', '1']);
    await fromPeer('ip-options'); // another reason
    await fromPeer('bad-vni'); // to the pod's address, outside that /24
    await fromPeer('inner-dst-elsewhere');
    expect(await m.exited).toBe(0);
    const lines = m
      .output()
      .split('\n')
      .filter((l) => /^\d\d:/.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      new RegExp(
        `^\\d\\d:\\d\\d:\\d\\d\\.\\d{3} drop drop_inner_dst tc-decap if \\d+ outer ${node('n2').underlayIp} -> ${node('n1').underlayIp} vni 1 inner udp 10\\.244\\.2\\.77:\\d+ -> ${elsewhere().replaceAll('.', '\\.')}:9999 peer ${node('n2').underlayIp} \\(slot \\d+\\) len \\d+$`,
      ),
    );
  });
});

describe('trace', () => {
  const owner = () => ({ owner_pid: process.pid, owner_pidns: pidNamespace(), owner_start: processStart(process.pid)! });

  it('is written only while the switch asks for it, with fast and stack decisions, and sampled 1 in trace_sample', async () => {
    const [a, b] = [pod('n1-p1'), pod('n2-p1')];
    const gateway = node('n1').subnet.replace(/0\/\d+$/, '1');
    try {
      setSwitch({ flags: MONITOR_DROPS, trace_sample: 1, ...owner() });
      drain();
      expect((await ping(a.netns, b.ip, 2)).code).toBe(0);
      expect(readRing()).toEqual([]);

      setSwitch({ flags: MONITOR_TRACE, trace_sample: 1, ...owner() });
      expect((await ping(a.netns, b.ip, 2)).code).toBe(0);
      expect((await ping(a.netns, gateway, 1)).code).toBe(0);
      const events = readRing();
      expect(events.every((e) => e.kind === 'trace')).toBe(true);
      const icmp = (src: string, dst: string) => ({ family: 4, src, dst, protocol: 'icmp' });
      expect(events).toContainEqual(
        expect.objectContaining({
          hook: 'pod-send',
          reason: 'fast',
          path: 'fast',
          inner: icmp(a.ip, b.ip),
          outer: expect.objectContaining({ src: node('n1').underlayIp, dst: node('n2').underlayIp }),
        }),
      );
      expect(events).toContainEqual(expect.objectContaining({ hook: 'tc-decap', reason: 'fast', path: 'fast', inner: icmp(b.ip, a.ip) }));
      expect(events).toContainEqual(expect.objectContaining({ hook: 'pod-send', reason: 'not_remote', path: 'stack', inner: icmp(a.ip, gateway) }));

      // One in 2^32 - 1: six decisions (three pings, three replies) leave nothing, short of a 1 in 700 million chance.
      setSwitch({ flags: MONITOR_TRACE, trace_sample: 0xffffffff, ...owner() });
      expect((await ping(a.netns, b.ip, 3)).code).toBe(0);
      expect(readRing()).toEqual([]);
    } finally {
      setSwitch({ flags: 0, trace_sample: 0, owner_pid: 0, owner_pidns: 0, owner_start: 0n });
    }
  });

  it('twill monitor --type trace prints them', async () => {
    const m = await startMonitor(['--type', 'trace', '--reason', 'fast', '--address', pod('n2-p1').ip, '--json', '--count', '2']);
    expect((await ping(pod('n1-p1').netns, pod('n2-p1').ip, 3)).code).toBe(0);
    expect(await m.exited).toBe(0);
    const events = jsonEvents(m);
    expect(events).toHaveLength(2);
    for (const e of events) expect(e).toMatchObject({ kind: 'trace', path: 'fast', peer: { publicIp: node('n2').underlayIp } });
    expect(monitorSwitch()).toMatchObject({ flags: 0, owner_pid: 0 });
  });
});

describe('who owns the switch', () => {
  it('a second monitor is refused while one listens; SIGTERM ends the first and turns events off', async () => {
    const first = await startMonitor([]);
    expect(monitorSwitch()).toMatchObject({ flags: MONITOR_DROPS, owner_pid: first.child.pid });
    const second = await run([process.execPath, cliPath, 'monitor', '--pin-dir', pinDir()], { allowFailure: true });
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(`another twill monitor (pid ${first.child.pid}) is listening on ${pinDir()}`);
    first.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(monitorSwitch()).toMatchObject({ flags: 0, owner_pid: 0 });
  });

  it('a monitor that finds events left on by a monitor that is gone takes over', async () => {
    const gone = await run(['sh', '-c', 'echo $$']);
    const deadPid = Number(gone.stdout.trim());
    const agent = node('n1').agent!.pid;
    // The agent would turn them off too (next test): paused, it leaves this to the monitor.
    process.kill(agent, 'SIGSTOP');
    try {
      setSwitch({ flags: MONITOR_DROPS, trace_sample: 1, owner_pid: deadPid, owner_pidns: pidNamespace(), owner_start: 1n });
      const m = await startMonitor([]);
      expect(m.output()).toContain(`events were left on by monitor pid ${deadPid}, which is gone; taking over`);
      expect(monitorSwitch()).toMatchObject({ flags: MONITOR_DROPS, owner_pid: m.child.pid });
      m.kill('SIGINT');
      expect(await m.exited).toBe(0);
      expect(monitorSwitch()).toMatchObject({ flags: 0, owner_pid: 0 });
    } finally {
      process.kill(agent, 'SIGCONT');
    }
  });

  it('a monitor killed with SIGKILL leaves events on; the agent notices its owner is gone and turns them off', async () => {
    const m = await startMonitor(['--type', 'all']);
    const pid = m.child.pid!;
    expect(monitorSwitch()).toMatchObject({ flags: MONITOR_DROPS | MONITOR_TRACE, owner_pid: pid });
    expect((await mapsDoc()).monitor).toMatchObject({ drops: true, trace: true, traceSample: 1, ownerPid: pid });
    m.kill('SIGKILL');
    await m.exited;
    await until('the agent to turn events off', () => monitorSwitch().flags === 0);
    expect(monitorSwitch()).toMatchObject({ flags: 0, owner_pid: 0 });
    const agentLog = readFileSync(node('n1').agent!.log, 'utf8');
    expect(agentLog).toMatch(new RegExp(`a twill monitor ended without turning events off.*"pid":${pid}`));
  });
});

describe('decap in XDP, and IPv6 (dual-stack lab)', () => {
  beforeAll(async () => {
    await twill(['lab', 'down', '--name', XDP_LAB]).catch(() => undefined);
    await twill([
      'lab',
      'up',
      '--name',
      XDP_LAB,
      '--nodes',
      '2',
      '--pods-per-node',
      '1',
      '--underlay',
      '192.168.115.0/24',
      '--decap-hook',
      'xdp',
      '--ip-family',
      'dual',
    ]);
    lab = JSON.parse((await twill(['lab', 'status', '--name', XDP_LAB, '--json'])).stdout) as LabState;
  }, 240_000);

  /** IPv6 VXLAN at layer 2 from n2 (craft6.py), to n1's pod. */
  async function send6(kind: string): Promise<void> {
    const [n1, n2] = [node('n1'), node('n2')];
    const n1Mac = (JSON.parse((await run(['ip', '-n', n1.netns, '-j', 'link', 'show', 'eth0'])).stdout) as { address: string }[])[0].address;
    await run(['/usr/bin/python3', craft6, kind, 'eth0', n1Mac, n2.underlayIp6!, n1.underlayIp6!, pod('n1-p1').ips![1], '1', '8472', n1.vtepMac6!], {
      netns: n2.netns,
    });
  }

  it('IPv4 drops in XDP name the hook xdp-decap; IPv6 ones at tc carry IPv6 outer and inner addresses', async () => {
    const [n1, n2] = [node('n1'), node('n2')];
    const pod6 = pod('n1-p1').ips![1];
    const m = await startMonitor(['--json', '--count', '3']);
    await fromPeer('bad-vni');
    await send6('bad-vni');
    await send6('unknown-source');
    expect(await m.exited).toBe(0);
    const inner6 = { family: 6, src: 'fd76:b6:1:2::77', dst: pod6, protocol: 'udp', dport: 9999 };
    expect(jsonEvents(m)).toMatchObject([
      {
        reason: 'drop_bad_vni',
        hook: 'xdp-decap',
        program: 'twill_decap',
        outer: { family: 4, src: n2.underlayIp, dst: n1.underlayIp, vni: 2 },
        inner: { dst: pod('n1-p1').ip },
        peer: { publicIp: n2.underlayIp },
      },
      {
        reason: 'drop_bad_vni',
        hook: 'tc-decap',
        outer: { family: 6, src: n2.underlayIp6, dst: n1.underlayIp6, vni: 2 },
        inner: inner6,
        peer: { publicIp: n2.underlayIp6 },
      },
      {
        reason: 'drop_unknown_source',
        hook: 'tc-decap',
        outer: { family: 6, src: 'fd76:b6::99', dst: n1.underlayIp6 },
        inner: inner6,
        peer: { slot: 0, publicIp: 'fd76:b6::99' },
      },
    ]);
  });

  it('IPv6 fast-path decisions are traced on both sides (twill_from_pod, twill_decap_tc)', async () => {
    const [a, b] = [pod('n1-p1'), pod('n2-p1')];
    const m = await startMonitor(['--type', 'trace', '--reason', 'fast', '--address', b.ips![1], '--json', '--count', '2']);
    expect((await run(['ping', '-6', '-c', '2', '-W', '2', '-i', '0.2', b.ips![1]], { netns: a.netns, allowFailure: true })).code).toBe(0);
    expect(await m.exited).toBe(0);
    const events = jsonEvents(m);
    expect(events.map((e) => e.hook).sort()).toEqual(['pod-send', 'tc-decap']);
    for (const e of events) expect(e).toMatchObject({ kind: 'trace', path: 'fast', inner: { family: 6, protocol: 'icmpv6' } });
  });
});
