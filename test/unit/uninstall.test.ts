import { describe, expect, it } from 'vitest';
import { TWILL_PLUGIN_MARKER, twillPluginTarget } from '../../controller/cni/install.js';
import { desiredRules, parseIptablesSave, planRestore } from '../../controller/masq/rules.js';
import { parseCidr } from '../../controller/net/ipv4.js';
import { parseAgentFlags } from '../../controller/agent/flags.js';
import { runCli } from '../../controller/cli/main.js';
import { takeGlobalFlags } from '../../controller/util/global-flags.js';
import {
  agentPinDir,
  describeStep,
  flannelDevice,
  planUninstall,
  takenByDetach,
  type NodeFindings,
  type UninstallOptions,
  type UnpinnedProgram,
} from '../../controller/uninstall/plan.js';

const opts: UninstallOptions = {
  pinDir: '/sys/fs/bpf/twill',
  subnetFile: '/run/flannel/subnet.env',
  cniPlugin: '/opt/cni/bin/flannel',
  cniConf: '',
  installDir: '',
  keepFlannel: false,
};

/** A node where the agent ran: BPF pins, kernel record, masquerade chains, a twill plugin, pod records. */
const savedWithChains = parseIptablesSave(
  [
    '*nat',
    ':POSTROUTING ACCEPT [0:0]',
    ':FLANNEL-POSTRTG - [0:0]',
    '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
    '-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
    'COMMIT',
    '*filter',
    ':FORWARD ACCEPT [0:0]',
    ':FLANNEL-FWD - [0:0]',
    '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD',
    '-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT',
    'COMMIT',
  ].join('\n'),
);
const emptySaved = parseIptablesSave('*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n');

const fullNode = (): NodeFindings => ({
  agents: [],
  bpf: {
    pins: ['/sys/fs/bpf/twill/links', '/sys/fs/bpf/twill/links/decap', '/sys/fs/bpf/twill/twill_config'],
    attachState: '/run/twill/dataplane/twill',
    devices: ['twill0', 'twill-rx'],
    kernelRecord: '/run/twill/kernel/twill.json',
  },
  unpinnedPrograms: [],
  vxlanDevices: [],
  directRoutes: [],
  iptables: [
    { family: 4, saved: savedWithChains },
    { family: 6, saved: undefined },
  ],
  files: { subnetFile: true, endpointsDir: '/run/flannel/endpoints', cniPlugin: { twill: true, runs: '/opt/twill/0.1.0' }, cniConf: false, installCopies: [] },
});

const emptyNode = (): NodeFindings => ({
  agents: [],
  bpf: { pins: [], devices: [] },
  unpinnedPrograms: [],
  vxlanDevices: [],
  directRoutes: [],
  iptables: [{ family: 4, saved: emptySaved }],
  files: { subnetFile: false, cniConf: false, installCopies: [] },
});

describe('planUninstall', () => {
  it('removes the BPF datapath first, then the chains, the plugin, the records and the subnet file last', () => {
    const plan = planUninstall(fullNode(), opts);
    expect(plan.refusal).toBeUndefined();
    expect(plan.steps.map((s) => s.kind)).toEqual(['bpf-datapath', 'iptables', 'file', 'directory', 'file', 'file']);
    expect(plan.steps.map(describeStep)).toEqual([
      'BPF datapath of /sys/fs/bpf/twill: device twill0, device twill-rx, /sys/fs/bpf/twill/links, /sys/fs/bpf/twill/links/decap, /sys/fs/bpf/twill/twill_config, /run/twill/dataplane/twill',
      'iptables nat FLANNEL-POSTRTG, filter FLANNEL-FWD and their jumps',
      "/opt/cni/bin/flannel (twill's CNI plugin, running /opt/twill/0.1.0)",
      "/run/flannel/endpoints (the CNI plugin's pod records)",
      "/run/twill/kernel/twill.json (the agent's kernel probe record)",
      '/run/flannel/subnet.env (subnet file)',
    ]);
    expect(plan.kept).toEqual([]);
  });

  it('removes both chains and their jumps exactly as an agent started with both flags off does', () => {
    const step = planUninstall(fullNode(), opts).steps.find((s) => s.kind === 'iptables');
    const flagsOff = desiredRules({
      network: parseCidr('10.244.0.0/16')!,
      subnet: parseCidr('10.244.1.0/24')!,
      ipMasq: false,
      randomFully: true,
      forwardRules: false,
    });
    expect(step).toMatchObject({ family: 4, script: planRestore(savedWithChains, flagsOff).script });
    expect(step?.kind === 'iptables' && step.script).toContain('-X FLANNEL-FWD');
  });

  it('removes twill programs attached without a pin right after the detach, naming each', () => {
    const found = fullNode();
    found.unpinnedPrograms = [
      { dev: 'veth1234', prog: 'twill_from_pod', hook: { kind: 'tc', direction: 'ingress', pref: 1, handle: '0x1' } },
      { dev: 'eth0', prog: 'twill_decap', hook: { kind: 'xdp', mode: 'xdpdrv' } },
    ];
    const steps = planUninstall(found, opts).steps;
    expect(steps.map((s) => s.kind).slice(0, 2)).toEqual(['bpf-datapath', 'unpinned-programs']);
    expect(describeStep(steps[1])).toBe('programs attached without a pin: twill_from_pod (clsact ingress pref 1) on veth1234, twill_decap (xdpdrv) on eth0');
  });

  it('leaves to the detach what its attach state records and the devices it removes, and sweeps the rest', () => {
    const state = {
      encap: { mode: 'clsact' as const, iface: 'twill0', ifindex: 5 },
      decap: { mode: 'xdp-native' as const, iface: 'eth0', ifindex: 2 },
      deliver: { mode: 'clsact' as const, iface: 'eth0', ifindex: 2 },
    };
    const xdp = (dev: string) => ({ dev, prog: 'twill_decap', hook: { kind: 'xdp' as const, mode: 'xdpdrv' as const } });
    const tc = (dev: string, direction: 'ingress' | 'egress') => ({ dev, prog: 'twill_x', hook: { kind: 'tc' as const, direction, pref: 1, handle: '0x1' } });
    const taken = (u: UnpinnedProgram) => takenByDetach(u, state, ['twill-rx']);
    expect([xdp('eth0'), tc('eth0', 'ingress'), tc('twill0', 'egress'), tc('twill-rx', 'ingress')].map(taken)).toEqual([true, true, true, true]);
    expect([xdp('eth1'), tc('veth1', 'ingress'), tc('eth0', 'egress')].map(taken)).toEqual([false, false, false]);
    expect(takenByDetach(xdp('eth0'), { ...state, decap: { mode: 'tcx', iface: 'eth0', ifindex: 2 } }, [])).toBe(false);
    expect(takenByDetach(tc('veth1', 'ingress'), undefined, [])).toBe(false);
  });

  it("removes flannel's devices and routes on a kernel node, each device with its VNI and family", () => {
    const found = { ...emptyNode(), vxlanDevices: ['flannel.1', 'flannel-v6.1'], directRoutes: ['10.244.3.0/24 via 192.168.1.3'] };
    expect(planUninstall(found, opts).steps).toEqual([
      { kind: 'vxlan-device', name: 'flannel.1', vni: 1, family: 4 },
      { kind: 'vxlan-device', name: 'flannel-v6.1', vni: 1, family: 6 },
      { kind: 'direct-routes', routes: ['10.244.3.0/24 via 192.168.1.3'] },
    ]);
  });

  it("with --keep-flannel keeps what flanneld takes over and still removes what is only twill's", () => {
    const found = { ...fullNode(), vxlanDevices: ['flannel.1'], directRoutes: ['10.244.3.0/24 via 192.168.1.3'] };
    const plan = planUninstall(found, { ...opts, keepFlannel: true });
    expect(plan.steps.map((s) => s.kind)).toEqual(['bpf-datapath', 'file', 'directory', 'file']);
    expect(plan.steps.map(describeStep).join('\n')).not.toContain('subnet.env');
    expect(plan.kept.map((k) => k.name)).toEqual([
      'device flannel.1 and its neighbour, FDB and route entries',
      'routes 10.244.3.0/24 via 192.168.1.3',
      'iptables nat FLANNEL-POSTRTG, filter FLANNEL-FWD',
      '/run/flannel/subnet.env',
    ]);
    expect(new Set(plan.kept.map((k) => k.why))).toEqual(new Set(['kept for flanneld (--keep-flannel)']));
  });

  it('keeps a plugin of the same name that twill did not write, and removes the conflist and copies only when named', () => {
    const found = fullNode();
    found.files.cniPlugin = { twill: false };
    found.files.installCopies = ['/opt/twill/0.1.0', '/opt/twill/0.2.0.tmp'];
    found.files.cniConf = true;
    const plan = planUninstall(found, { ...opts, cniConf: '/etc/cni/net.d/10-flannel.conflist', installDir: '/opt/twill' });
    expect(plan.kept).toEqual([{ name: '/opt/cni/bin/flannel', why: "not a plugin twill wrote (flannel's own?)" }]);
    const files = plan.steps.filter((s) => s.kind === 'file' || s.kind === 'directory').map((s) => (s.kind === 'file' || s.kind === 'directory' ? s.path : ''));
    expect(files).toEqual([
      '/etc/cni/net.d/10-flannel.conflist',
      '/opt/twill/0.1.0',
      '/opt/twill/0.2.0.tmp',
      '/run/flannel/endpoints',
      '/run/twill/kernel/twill.json',
      '/run/flannel/subnet.env',
    ]);
  });

  it('plans nothing on a node without a trace of twill (a second run)', () => {
    expect(planUninstall(emptyNode(), opts)).toEqual({ steps: [], kept: [] });
  });

  it('refuses, with no step, while an agent serves this pin dir or runs in this network namespace', () => {
    for (const agent of [
      { pid: 42, pinDir: '/sys/fs/bpf/twill', sameNetns: false },
      { pid: 42, pinDir: '/sys/fs/bpf/other', sameNetns: true },
    ]) {
      const plan = planUninstall({ ...fullNode(), agents: [agent] }, opts);
      expect(plan.steps).toEqual([]);
      expect(plan.refusal).toMatch(/^a twill agent is running on this node: pid 42 .*Stop it first/);
    }
  });

  it("goes ahead while agents of other nodes run (another pin dir, another network namespace: a lab's nodes)", () => {
    const plan = planUninstall({ ...fullNode(), agents: [{ pid: 7, pinDir: '/sys/fs/bpf/twill-lab/tu1-n2', sameNetns: false }] }, opts);
    expect(plan.refusal).toBeUndefined();
    expect(plan.steps.length).toBeGreaterThan(0);
  });
});

describe('agentPinDir: a twill agent among the processes', () => {
  it('reads the pin dir from bin/twill, cli.js, global flags before the command, -pin-dir and FLANNELD_PIN_DIR, as the agent does', () => {
    const cases: [string[], NodeJS.ProcessEnv][] = [
      [['node', '--max-semi-space-size=1', '/opt/twill/bin/twill', 'agent', '--pin-dir=/sys/fs/bpf/twill-lab/x-n1', '--log-format=json'], {}],
      [['/usr/lib/twill/node/bin/node', '/usr/lib/twill/dist/controller/cli.js', 'agent', '--ip-masq'], {}],
      [['node', '/x/dist/controller/cli.js', '--log-format', 'json', 'agent', '-pin-dir', '/sys/fs/bpf/a'], {}],
      [['node', '/x/bin/twill', 'agent', '--ip-masq'], { FLANNELD_PIN_DIR: '/sys/fs/bpf/b' }],
      [['node', '/x/bin/twill', 'agent', '--pin-dir', '/sys/fs/bpf/c'], { FLANNELD_PIN_DIR: '/sys/fs/bpf/b' }],
    ];
    for (const [argv, env] of cases) {
      const asParsed = parseAgentFlags(takeGlobalFlags(argv.slice(argv.findIndex((a) => a === 'agent'))).argv.slice(1), env).pinDir;
      expect(agentPinDir(argv, env), argv.join(' ')).toBe(asParsed);
    }
    expect(cases.map(([argv, env]) => agentPinDir(argv, env))).toEqual([
      '/sys/fs/bpf/twill-lab/x-n1',
      '/sys/fs/bpf/twill',
      '/sys/fs/bpf/a',
      '/sys/fs/bpf/b',
      '/sys/fs/bpf/c',
    ]);
  });

  it('finds the pin dir of an agent of another version, whose flags this build does not know', () => {
    expect(agentPinDir(['node', '/x/bin/twill', 'agent', '--flag-of-a-later-version=false', '--pin-dir=/sys/fs/bpf/d'], {})).toBe('/sys/fs/bpf/d');
  });

  it('is undefined for other twill commands and other programs', () => {
    expect(agentPinDir(['node', '/x/bin/twill', 'uninstall', '--pin-dir', '/sys/fs/bpf/twill'], {})).toBeUndefined();
    expect(agentPinDir(['node', '/x/bin/twill', 'lab', 'up'], {})).toBeUndefined();
    expect(agentPinDir(['/usr/sbin/flanneld', 'agent'], {})).toBeUndefined();
    expect(agentPinDir(['twill'], {})).toBeUndefined();
  });
});

describe('flannelDevice and twillPluginTarget', () => {
  it("knows flannel's device names only", () => {
    expect(flannelDevice('flannel.1')).toEqual({ vni: 1, family: 4 });
    expect(flannelDevice('flannel-v6.4096')).toEqual({ vni: 4096, family: 6 });
    for (const n of ['twill-rx', 'flannel.x', 'flannel', 'xflannel.1']) expect(flannelDevice(n)).toBeUndefined();
  });

  it('tells the plugin twill writes from anything else of that name', () => {
    const ours = `#!/bin/sh\n${TWILL_PLUGIN_MARKER}\nexec /opt/twill/0.1.0/node/bin/node /opt/twill/0.1.0/dist/controller/cni/main.js\n`;
    expect(twillPluginTarget(ours)).toEqual({ root: '/opt/twill/0.1.0' });
    expect(twillPluginTarget('\x7fELF\x02\x01\x01')).toBeUndefined();
    expect(twillPluginTarget(`#!/bin/sh\nexec /usr/bin/flannel\n`)).toBeUndefined();
  });
});

describe('twill uninstall: bad flags are named before anything is looked at', () => {
  it.each([
    [['--pin-dir', '/tmp/twill'], '--pin-dir /tmp/twill: not a directory under /sys/fs/bpf'],
    [['--subnet-file', 'subnet.env'], '--subnet-file subnet.env: not an absolute path'],
    [['--cni-conf', 'net.d/10-flannel.conflist'], '--cni-conf net.d/10-flannel.conflist: not an absolute path'],
    [['--cni-plugin', '../flannel'], '--cni-plugin ../flannel: not a plugin name'],
    [['extra'], 'unexpected argument extra'],
  ])('%j', async (argv, message) => {
    await expect(runCli(['uninstall', ...argv])).rejects.toThrow(message);
  });
});
