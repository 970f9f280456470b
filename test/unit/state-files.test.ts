import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { statusCli } from '../../controller/cli/status.js';
import { cniMain } from '../../controller/cni/plugin.js';
import { readAttachState } from '../../controller/dataplane/attach-state.js';
import { choiceRecordPath, readChoiceRecord, recordKernelFallback } from '../../controller/dataplane/choice-record.js';
import { pinPaths } from '../../controller/dataplane/spec.js';
import { readEndpointRecords } from '../../controller/endpoints/records.js';
import { labStatePath, labStatus } from '../../controller/lab/state.js';
import { parseCidr } from '../../controller/net/ipv4.js';
import { checkSubnetFile } from '../../controller/subnet/subnet-file.js';
import { parseStateFile, StateFileError } from '../../controller/util/state-file.js';
import { LAYOUT_VERSION } from '../../maps/layout.js';

/*
 * Every JSON state file twill reads back is checked field by field: the error names the file
 * and the field, and a file written by a newer version (a field this one does not know) still
 * reads. The files are written where their readers look, under names of this test's own.
 */

const pinDir = `/sys/fs/bpf/tl-state-${process.pid}`;
const labName = 'tlsf';
const tmp = mkdtempSync(path.join(tmpdir(), 'twill-state-'));
const written: string[] = [tmp];
function put(file: string, doc: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, typeof doc === 'string' ? doc : JSON.stringify(doc));
  written.push(file);
}
afterAll(() => {
  for (const f of written) rmSync(f, { recursive: true, force: true });
  rmSync(path.dirname(pinPaths(pinDir).attachState), { recursive: true, force: true });
  rmSync(path.dirname(labStatePath(labName)), { recursive: true, force: true });
});

describe('parseStateFile', () => {
  it('names the file when it is not JSON, and the file and every wrong field otherwise', async () => {
    const { z } = await import('zod');
    const schema = z.object({ a: z.number(), b: z.object({ c: z.string() }) });
    expect(() => parseStateFile('test state', '/x/state.json', '{"a":', schema)).toThrow(/^test state \/x\/state\.json: not JSON \(/);
    expect(() => parseStateFile('test state', '/x/state.json', '{"a":"1","b":{"c":2}}', schema)).toThrow(
      'test state /x/state.json: a: Invalid input: expected number, received string; b.c: Invalid input: expected string, received number',
    );
    expect(() => parseStateFile('test state', '/x/state.json', '[]', schema)).toThrow(/^test state \/x\/state\.json: the document: /);
    expect(() => parseStateFile('test state', '/x/state.json', '{}', schema)).toThrow(StateFileError);
  });
});

describe('the attach state', () => {
  const state = {
    spec: {
      pinDir,
      underlayIface: 'eth0',
      publicIp: '192.168.120.1',
      vtepMac: '02:00:00:00:00:01',
      subnet: '10.244.1.0/24',
      network: '10.244.0.0/16',
      backend: 'vxlan',
      vni: 1,
      port: 8472,
      overlayDevice: 'twill0',
      tunnelDevice: 'twill-rx',
      decapHook: 'auto',
      fastPath: true,
      podSourceCheck: 'drop',
    },
    encap: { mode: 'tcx', iface: 'twill0', ifindex: 5 },
    decap: { mode: 'tcx', iface: 'eth0', ifindex: 2, hook: 'tc', requested: 'auto', reason: 'eth0 is a veth' },
    fastPath: { requested: true, enabled: true, conntrack: true, reason: 'on' },
    tunnel: { iface: 'twill-rx', ifindex: 6, mode: 'tcx', up: true },
    layoutVersion: LAYOUT_VERSION,
    attachedAt: '2026-11-30T19:00:00.000Z',
  };

  it('reads back as written, keeping a field a newer version added', () => {
    put(pinPaths(pinDir).attachState, { ...state, monitor: { ringbuf: true } });
    expect(readAttachState(pinDir)).toEqual({ ...state, monitor: { ringbuf: true } });
  });

  it('names the file and the field that is wrong', () => {
    const file = pinPaths(pinDir).attachState;
    put(file, { ...state, decap: { ...state.decap, mode: 'xdp-turbo' }, encap: { ...state.encap, ifindex: '5' } });
    expect(() => readAttachState(pinDir)).toThrow(
      `attach state ${file}: encap.ifindex: Invalid input: expected number, received string; decap.mode: Invalid option: expected one of`,
    );
    put(file, '{"spec":');
    expect(() => readAttachState(pinDir)).toThrow(`attach state ${file}: not JSON`);
  });
});

describe('the kernel record', () => {
  const capability = { present: true, detail: 'probed' };
  const record = {
    probe: {
      kernel: '6.18.0',
      capabilities: {
        btf: capability,
        tcx: capability,
        redirectPeer: capability,
        redirectNeigh: capability,
        checkMtu: capability,
        conntrackKfuncs: { detail: 'the probe failed' },
        ringbuf: capability,
      },
      probedAt: '2026-11-30T19:00:00.000Z',
    },
    choice: { requested: 'auto', dataplane: 'bpf', attach: 'tcx', decap: 'tc', fastPath: true, reasons: { dataplane: 'auto: every capability present' } },
  };

  it('reads back as written (a failed probe has no `present`), and the fallback rewrites it', () => {
    put(choiceRecordPath(pinDir), record);
    expect(readChoiceRecord(pinDir)).toEqual({
      ...record,
      probe: { ...record.probe, capabilities: { ...record.probe.capabilities, conntrackKfuncs: { present: undefined, detail: 'the probe failed' } } },
    });
    recordKernelFallback(pinDir, 'verifier says no');
    expect(readChoiceRecord(pinDir)?.choice).toEqual({
      requested: 'auto',
      dataplane: 'kernel',
      reasons: { dataplane: 'auto: the BPF datapath did not attach (verifier says no): kernel VXLAN as flannel does' },
    });
  });

  it('names the file and the field that is wrong', () => {
    const file = choiceRecordPath(pinDir);
    const { tcx: _tcx, ...withoutTcx } = record.probe.capabilities;
    put(file, { ...record, probe: { ...record.probe, capabilities: withoutTcx }, choice: { ...record.choice, dataplane: 'ebpf' } });
    expect(() => readChoiceRecord(pinDir)).toThrow(
      `kernel record ${file}: probe.capabilities.tcx: Invalid input: expected object, received undefined; choice.dataplane: Invalid option: expected one of "bpf"|"kernel"`,
    );
  });
});

describe("the lab's state", () => {
  const node = {
    name: 'n1',
    netns: 'tlsf-n1',
    iface: 'eth0',
    underlayIp: '192.168.120.1',
    underlayMac: '',
    subnet: '',
    vtepMac: '',
    pinDir: '/sys/fs/bpf/twill-lab/tlsf-n1',
    subnetFile: '/run/twill/lab/tlsf/n1/subnet.env',
    dataplane: 'bpf',
  };
  const state = {
    name: labName,
    network: '10.244.0.0/16',
    subnetLen: 24,
    podMtu: 1450,
    pinRoot: '/sys/fs/bpf/twill-lab',
    underlay: { netns: 'tlsf-ul', bridge: 'br0', cidr: '192.168.120.0/24', gateway: '192.168.120.254' },
    etcd: {
      pid: 1234,
      endpoint: 'http://192.168.120.250:2379',
      dataDir: '/run/twill/lab/tlsf/etcd',
      logFile: '/run/twill/lab/tlsf/etcd.log',
      netns: 'tlsf-etcd',
      prefix: '/coreos.com/network',
    },
    nodes: [node],
    pods: [{ name: 'n1-p1', netns: 'tlsf-n1-p1', ip: '10.244.1.2', node: 'n1', containerId: 'c1' }],
  };

  it('reads back a lab made half-way (a node without its addresses yet), keeping a field a newer version added', async () => {
    put(labStatePath(labName), { ...state, nodes: [{ ...node, monitor: 'on' }] });
    expect(await labStatus(labName)).toEqual({ ...state, nodes: [{ ...node, monitor: 'on' }] });
  });

  it('names the file and the field that is wrong', async () => {
    put(labStatePath(labName), { ...state, nodes: [{ ...node, dataplane: 'ebpf' }], pods: [{ ...state.pods[0], ip: 7 }] });
    await expect(labStatus(labName)).rejects.toThrow(
      `lab state ${labStatePath(labName)}: nodes.0.dataplane: Invalid option: expected one of "bpf"|"kernel"|"flanneld"; pods.0.ip: Invalid input: expected string, received number`,
    );
  });
});

describe('the subnet file', () => {
  it('names each variable whose value is unusable, and leaves it out', () => {
    const { file, problems } = checkSubnetFile(
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.300.1/24\nFLANNEL_IPV6_SUBNET=fc00::1/200\nFLANNEL_MTU=14a0\nFLANNEL_IPMASQ=yes\n',
    );
    expect(file).toEqual({ network: parseCidr('10.244.0.0/16') });
    expect(problems).toEqual([
      'FLANNEL_SUBNET=10.244.300.1/24: not an IPv4 CIDR',
      'FLANNEL_IPV6_SUBNET=fc00::1/200: not an IPv6 CIDR',
      'FLANNEL_MTU=14a0: not a number',
      'FLANNEL_IPMASQ=yes: not true or false',
    ]);
    expect(checkSubnetFile('FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n').problems).toEqual([]);
  });

  it('fails a CNI ADD on one, naming the file and the variable, before anything is delegated', async () => {
    const dataDir = path.join(tmp, 'cni-add');
    const subnetFile = path.join(tmp, 'bad-subnet.env');
    put(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=false\n');
    const res = await cniMain(JSON.stringify({ name: 'n', type: 'flannel', dataDir, subnetFile }), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c8' });
    expect(JSON.parse(res.out)).toMatchObject({ code: 7, msg: `subnet file ${subnetFile}: FLANNEL_MTU=big: not a number` });
    expect(existsSync(path.join(dataDir, 'c8'))).toBe(false);
  });

  it("shows in twill status, as the file's unusable variables and as a problem, without hiding the rest", async () => {
    const file = path.join(tmp, 'status-subnet.env');
    put(file, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=big\nFLANNEL_IPMASQ=false\n');
    const out: string[] = [];
    const print = vi.spyOn(console, 'log').mockImplementation((line: unknown) => void out.push(String(line)));
    try {
      await statusCli(['--pin-dir', `/sys/fs/bpf/tl-status-${process.pid}`, '--subnet-file', file, '--json']);
    } finally {
      print.mockRestore();
    }
    const doc = JSON.parse(out.join('\n')) as { subnetFile: Record<string, unknown>; problems: string[] };
    expect(doc.subnetFile).toEqual({
      path: file,
      network: '10.244.0.0/16',
      subnet: '10.244.1.0/24',
      ipMasq: false,
      unusable: ['FLANNEL_MTU=big: not a number'],
    });
    expect(doc.problems).toContain(`subnet file ${file}: FLANNEL_MTU=big: not a number`);
  });
});

describe("the CNI plugin's files", () => {
  it('reports an endpoint record that is not one by its file and field, and reads the others', () => {
    const dir = path.join(tmp, 'endpoints');
    const good = {
      containerId: 'c1',
      ifname: 'eth0',
      ip: '10.244.1.2',
      mac: '0a:58:0a:f4:01:02',
      hostVeth: 'veth1',
      bridge: 'cni0',
      addedAt: '2026-11-30T19:00:00.000Z',
    };
    put(path.join(dir, 'c1_eth0.json'), good);
    put(path.join(dir, 'c2_eth0.json'), { ...good, containerId: 'c2', mac: 'not-a-mac' });
    put(path.join(dir, 'c3_eth0.json'), '{"containerId"');
    const { records, invalid } = readEndpointRecords(dir);
    expect(records).toEqual([good]);
    expect(invalid.map((i) => i.error).sort()).toEqual([
      `endpoint record ${dir}/c2_eth0.json: mac: a lower-case MAC address`,
      expect.stringMatching(new RegExp(`^endpoint record ${dir}/c3_eth0\\.json: not JSON`)),
    ]);
  });

  it('fails DEL on a saved delegate config that names no plugin, naming the file, and leaves it', async () => {
    const dataDir = path.join(tmp, 'cni');
    put(path.join(dataDir, 'c9'), { name: 'cbr0', bridge: 'cni0' });
    const res = await cniMain(`{"name":"n","type":"flannel","dataDir":"${dataDir}","subnetFile":"/nonexistent/subnet.env"}`, {
      CNI_COMMAND: 'DEL',
      CNI_CONTAINERID: 'c9',
    });
    expect(res.code).toBe(1);
    expect(JSON.parse(res.out).msg).toBe(`saved delegate config ${dataDir}/c9: type: Invalid input: expected string, received undefined`);
    expect(existsSync(path.join(dataDir, 'c9'))).toBe(true);
  });
});
