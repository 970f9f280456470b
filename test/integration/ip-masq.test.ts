import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopAgent } from '../../controller/lab/agents.js';
import type { LabNode, LabPod, LabState } from '../../controller/lab/state.js';
import { desiredRules } from '../../controller/masq/rules.js';
import { parseCidr } from '../../controller/net/ipv4.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { agentLog, bounceAgent, etcdctl, fakeLease, labUpFresh, leaseKey, twill, until } from '../support/lab-session.js';
import { startInNetns, stopAll, type Background } from '../support/proc.js';

/*
 * --ip-masq in a 2-node lab (name "tqm"): a host outside the cluster network (namespace "tqx-out"
 * on the underlay bridge, with no route to the pods) is reached from a pod only through
 * masquerade, pod-to-pod traffic keeps its addresses, the rules are repaired when deleted, and an
 * agent restart leaves them untouched: a stream of new UDP flows, each of which needs the
 * MASQUERADE rule at its first packet, crosses the restart without one flow missing it.
 */
const LAB = 'tqm';
const OUTSIDE_NS = 'tqx-out';
const OUTSIDE_IP = '192.168.86.200';
const PORT = 7070;
const MASQ_ARGS = ['--ip-masq', '--iptables-resync=1'];
let lab: LabState;
let outside: Background;
let podListener: Background;
const node = (name: string) => lab.nodes.find((n) => n.name === name)!;
const pod = (name: string) => lab.pods.find((p) => p.name === name)!;

/** Prints "<source address> <payload>" per datagram and answers those starting with "ask". */
const listener = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", ${PORT}))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    print(peer[0], data.decode(), flush=True)
    if data.startswith(b"ask"):
        try:
            s.sendto(b"answer", peer)
        except OSError as e:
            print("cannot answer", peer[0], e.strerror, flush=True)
`;

/** Sends "ask <tag>" from a pod; resolves to the answer, or "no answer". */
async function ask(from: LabPod, to: string, tag: string): Promise<string> {
  const py = `import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.sendto(b"ask ${tag}", ("${to}", ${PORT}))
try: print(s.recv(100).decode())
except socket.timeout: print("no answer")`;
  return (await run(['python3', '-c', py], { netns: from.netns })).stdout.trim();
}

/** The source address the listener printed for a tag; waits for the line to appear. */
const seenFrom = (l: Background, tag: string) => until(`datagram ${tag}`, async () => new RegExp(`^(\\S+) ask ${tag}$`, 'm').exec(l.output())?.[1], 5000);

/**
 * One datagram per new flow, each from its own source port (so every one is a new conntrack
 * entry that goes through nat POSTROUTING), until SIGINT; prints how many it sent.
 */
const flowStream = (tag: string) => `
import socket, time
sent = 0
try:
    while sent < 20000:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 30000 + sent))
        s.sendto(b"${tag} %d" % sent, ("${OUTSIDE_IP}", ${PORT}))
        s.close()
        sent += 1
        time.sleep(0.004)
except KeyboardInterrupt:
    pass
print("sent", sent, flush=True)
`;

const save = async (n: LabNode, table: string, counters = false) =>
  (await run(['iptables-save', ...(counters ? ['-c'] : []), '-t', table], { netns: n.netns })).stdout;
const chainRules = async (n: LabNode, table: string, chain: string) => (await save(n, table)).split('\n').filter((l) => l.startsWith(`-A ${chain} `));
const masqChainPresent = async (n: LabNode) =>
  (await chainRules(n, 'nat', 'FLANNEL-POSTRTG')).length === 6 && (await chainRules(n, 'nat', 'POSTROUTING')).some((l) => l.endsWith('-j FLANNEL-POSTRTG'));
/** Packets counted by the rule that masquerades pod traffic leaving the cluster network. */
async function outboundMasqCount(n: LabNode): Promise<number> {
  const line = (await save(n, 'nat', true)).split('\n').find((l) => l.includes('-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4'));
  if (!line) throw new Error(`no outbound MASQUERADE rule on ${n.name}`);
  return Number(/^\[(\d+):/.exec(line)![1]);
}

beforeAll(async () => {
  buildBpf();
  buildTs();
  await run(['ip', 'netns', 'del', OUTSIDE_NS], { allowFailure: true });
  lab = await labUpFresh(LAB, ['--nodes', '2', '--pods-per-node', '1', '--underlay', '192.168.86.0/24']);
  // A host outside the cluster: on the underlay, no default route, so nothing leads back to a pod address.
  await run(['ip', 'netns', 'add', OUTSIDE_NS]);
  await run(['ip', '-n', lab.underlay.netns, 'link', 'add', 'tqx0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', OUTSIDE_NS]);
  await run(['ip', '-n', lab.underlay.netns, 'link', 'set', 'tqx0', 'master', lab.underlay.bridge, 'up']);
  for (const cmd of [
    ['link', 'set', 'lo', 'up'],
    ['addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'eth0'],
    ['link', 'set', 'eth0', 'up'],
  ])
    await run(['ip', '-n', OUTSIDE_NS, ...cmd]);
  outside = startInNetns(OUTSIDE_NS, ['python3', '-u', '-c', listener]);
  podListener = startInNetns(pod('n2-p1').netns, ['python3', '-u', '-c', listener]);
  await Promise.all([outside.waitFor(/listening/), podListener.waitFor(/listening/)]);
}, 180_000);

afterAll(async () => {
  await stopAll();
  await run(['ip', 'netns', 'del', OUTSIDE_NS], { allowFailure: true });
  await twill(['lab', 'down', '--name', LAB]);
}, 60_000);

describe('--ip-masq', () => {
  it('off (the default): no masquerade chain, forward-accept rules in place, and the outside host cannot answer a pod', async () => {
    const n1 = node('n1');
    expect(await chainRules(n1, 'nat', 'FLANNEL-POSTRTG')).toEqual([]);
    expect(await chainRules(n1, 'filter', 'FLANNEL-FWD')).toEqual([
      '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
      '-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    ]);
    expect(await chainRules(n1, 'filter', 'FORWARD')).toEqual(['-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD']);
    expect(await ask(pod('n1-p1'), OUTSIDE_IP, 'plain')).toBe('no answer');
    expect(await seenFrom(outside, 'plain')).toBe(pod('n1-p1').ip);
  });

  it('on: the outside host sees the node, the pod gets its answer; pod to pod keeps the pod address', async () => {
    const n1 = node('n1');
    await bounceAgent(lab, n1, 'SIGTERM', MASQ_ARGS);
    // Exactly flannel's rules, as the kernel reports them back (which is why a restart finds them "in sync").
    const [masq] = desiredRules({
      network: parseCidr(lab.network)!,
      subnet: parseCidr(n1.subnet)!,
      ipMasq: true,
      randomFully: true,
      forwardRules: true,
    }).present;
    expect(await chainRules(n1, 'nat', 'FLANNEL-POSTRTG')).toEqual(masq.rules.map((r) => `-A FLANNEL-POSTRTG ${r}`));
    expect(masq.rules.filter((r) => r.endsWith('-j MASQUERADE --random-fully'))).toHaveLength(2);
    expect(await masqChainPresent(n1)).toBe(true);
    expect(await ask(pod('n1-p1'), OUTSIDE_IP, 'masq')).toBe('answer');
    expect(await seenFrom(outside, 'masq')).toBe(n1.underlayIp);
    expect(await ask(pod('n1-p1'), pod('n2-p1').ip, 'p2p')).toBe('answer');
    expect(await seenFrom(podListener, 'p2p')).toBe(pod('n1-p1').ip);
    const ready = JSON.parse((await run(['curl', '-s', `http://${n1.agent!.healthz}/readyz`], { netns: lab.underlay.netns })).stdout);
    expect(ready).toMatchObject({ ready: true, iptables: { writes: 1 } }); // the masquerade chain, added to the forward rules already there
    expect(ready.iptables.error).toBeUndefined();
  });

  it('survives an agent restart without a moment unmasqueraded: every new flow during it is masqueraded, and the rules are not rewritten', async () => {
    const n1 = node('n1');
    const before = await outboundMasqCount(n1);
    const stream = startInNetns(pod('n1-p1').netns, ['python3', '-u', '-c', flowStream('flow')]);
    await until('the first flows', async () => / flow 10$/m.test(outside.output()));
    const restartLog = await bounceAgent(lab, n1, 'SIGTERM', MASQ_ARGS);
    const flowsSeen = () => outside.output().match(/ flow \d+$/gm)?.length ?? 0;
    const atReady = flowsSeen();
    await until('flows after the restart', async () => flowsSeen() > atReady + 50);
    stream.kill('SIGINT');
    await stream.exited;
    const sent = Number(/sent (\d+)/.exec(stream.output())![1]);
    const received = await until('every flow at the outside host', async () => {
      const seen = [...outside.output().matchAll(/^(\S+) flow (\d+)$/gm)];
      return seen.length >= sent && seen;
    });
    expect(received).toHaveLength(sent);
    expect(new Set(received.map((m) => m[1]))).toEqual(new Set([n1.underlayIp]));
    // A chain rewritten during the restart would have restarted its counter from zero.
    expect((await outboundMasqCount(n1)) - before).toBe(sent);
    expect(restartLog).not.toContain('iptables rules written');
  });

  it('puts back a deleted rule and a deleted jump at the next resync, saying so', async () => {
    const n1 = node('n1');
    const from = agentLog(n1).length;
    await run(['iptables', '-t', 'nat', '-D', 'FLANNEL-POSTRTG', '5'], { netns: n1.netns });
    await until('the masquerade rule back', () => masqChainPresent(n1));
    await run(['iptables', '-t', 'nat', '-D', 'POSTROUTING', '-m', 'comment', '--comment', 'flanneld masq', '-j', 'FLANNEL-POSTRTG'], { netns: n1.netns });
    await run(['iptables', '-D', 'FORWARD', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD'], { netns: n1.netns });
    await until('both jumps back', async () => (await masqChainPresent(n1)) && (await chainRules(n1, 'filter', 'FORWARD')).length === 1);
    const repairs = agentLog(n1).slice(from);
    expect(repairs).toContain('nat FLANNEL-POSTRTG: rules differ (5 found, 6 wanted)');
    expect(repairs).toContain('nat POSTROUTING: jump to FLANNEL-POSTRTG missing');
    expect(repairs).toContain('filter FORWARD: jump to FLANNEL-FWD missing');
    expect(await ask(pod('n1-p1'), OUTSIDE_IP, 'repaired')).toBe('answer');
  });

  it('follow a lease that changed while the agent was down: the chain is swapped to the new subnet in place, flows keep being masqueraded', async () => {
    const n1 = node('n1');
    const old = n1.subnet;
    await stopAgent(n1.agent!.pid, n1.pinDir, 'SIGTERM');
    // Someone else holds our old subnet now (a reservation), so the agent must take another one.
    await etcdctl(lab, 'put', leaseKey(old), fakeLease('192.168.86.99', '0a:58:0a:00:00:99'));
    const stream = startInNetns(pod('n1-p1').netns, ['python3', '-u', '-c', flowStream('moved')]);
    await until('the first flows', async () => / moved 10$/m.test(outside.output()));
    const startLog = await bounceAgent(lab, n1, 'SIGTERM', MASQ_ARGS);
    const moved = /"msg":"acquired a new lease","subnet":"([\d./]+)"/.exec(startLog)?.[1];
    expect(moved).toBeDefined();
    expect(moved).not.toBe(old);
    expect(startLog).toContain(`nat FLANNEL-POSTRTG: rules differ (6 found, 6 wanted)`); // swapped, not deleted and re-created
    const rules = await chainRules(n1, 'nat', 'FLANNEL-POSTRTG');
    expect(rules.some((l) => l.includes(`-s ${moved} -d 10.244.0.0/16`))).toBe(true);
    expect(rules.join('\n')).not.toContain(old);
    stream.kill('SIGINT');
    await stream.exited;
    const sent = Number(/sent (\d+)/.exec(stream.output())![1]);
    const received = await until('every flow at the outside host', async () => {
      const seen = [...outside.output().matchAll(/^(\S+) moved (\d+)$/gm)];
      return seen.length >= sent && seen;
    });
    expect(received).toHaveLength(sent);
    expect(new Set(received.map((m) => m[1]))).toEqual(new Set([n1.underlayIp]));
  });

  it('turned off again, its chain and jump are removed and pods are seen with their own address', async () => {
    const n1 = node('n1');
    await bounceAgent(lab, n1, 'SIGTERM');
    expect(await save(n1, 'nat')).not.toContain('FLANNEL-POSTRTG');
    expect(await chainRules(n1, 'filter', 'FLANNEL-FWD')).toHaveLength(2);
    expect(await ask(pod('n1-p1'), OUTSIDE_IP, 'off')).toBe('no answer');
    expect(await seenFrom(outside, 'off')).toBe(pod('n1-p1').ip);
  });
});
