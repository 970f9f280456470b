import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject } from '../../controller/bpf/libbpf.js';
import { CNI_COMPILE_CACHE, cniBundle, cniCompileCacheDir, installCniPlugin } from '../../controller/cni/install.js';
import { repoRoot, runtimeNode } from '../../controller/util/paths.js';
import { endpointsDirFor, writePinDirPointer } from '../../controller/endpoints/records.js';
import { run } from '../../controller/util/exec.js';
import { mapSpecs } from '../../maps/layout.js';
import { TypedMap } from '../../maps/typed-map.js';
import { bpfBuildDir, buildBpf, buildTs } from '../support/build.js';

/*
 * The installed plugin as a container runtime runs it: the script `twill cni install` writes,
 * the bundled plugin behind it, the real bridge and host-local delegates, and real pinned
 * twill_endpoints maps (created by loading twill's encap object) standing in for a node whose
 * agent runs. Names: namespaces tk-cni-node and tk-cni-pod, pins under /sys/fs/bpf/tk-cni,
 * addresses in 10.118.0.0/16 and fd18:118::/48 (no traffic leaves the node namespace).
 */
const NODE_NS = 'tk-cni-node';
const POD_NS = 'tk-cni-pod';
const PIN_DIR = '/sys/fs/bpf/tk-cni';
const CNI_BIN = '/usr/lib/cni';
let scratch: string;
let plugin: string;
let subnetFile: string;

const netconf = () => ({
  cniVersion: '0.4.0',
  name: 'tknet',
  type: 'flannel',
  subnetFile,
  dataDir: path.join(scratch, 'flannel'),
  ipam: { dataDir: path.join(scratch, 'ipam') },
});
const cni = (command: string, containerId: string, env: Record<string, string> = {}) =>
  run([plugin], {
    netns: NODE_NS,
    input: JSON.stringify(netconf()),
    allowFailure: true,
    env: {
      PATH: process.env.PATH,
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: `/run/netns/${POD_NS}`,
      CNI_IFNAME: 'eth0',
      CNI_PATH: CNI_BIN,
      ...env,
    },
  });

const openEndpointMaps = () => ({
  v4: new TypedMap(BpfMap.fromPin(`${PIN_DIR}/twill_endpoints`), mapSpecs.twill_endpoints.key, mapSpecs.twill_endpoints.value),
  v6: new TypedMap(BpfMap.fromPin(`${PIN_DIR}/twill_endpoints6`), mapSpecs.twill_endpoints6.key, mapSpecs.twill_endpoints6.value),
});
function withEndpointMaps<T>(fn: (maps: ReturnType<typeof openEndpointMaps>) => T): T {
  const maps = openEndpointMaps();
  try {
    return fn(maps);
  } finally {
    maps.v4.map.close();
    maps.v6.map.close();
  }
}
const entry = { ifindex: 7, mac: '02:00:00:00:00:07', gateway_mac: '02:00:00:00:00:01', mtu: 1450, encap_mtu: 1450, flags: 0 };

async function cleanUp(): Promise<void> {
  for (const ns of [POD_NS, NODE_NS]) await run(['ip', 'netns', 'del', ns], { allowFailure: true });
  rmSync(PIN_DIR, { recursive: true, force: true });
}

beforeAll(async () => {
  buildBpf();
  buildTs();
  await cleanUp();
  scratch = mkdtempSync(path.join(os.tmpdir(), 'tk-cni-'));
  plugin = installCniPlugin(path.join(scratch, 'bin'), 'flannel');
  subnetFile = path.join(scratch, 'run/subnet.env');
  const obj = BpfObject.open(path.join(bpfBuildDir, 'encap.bpf.o'), { pinRootPath: PIN_DIR });
  try {
    obj.load(); // pins every map by name, twill_endpoints and twill_endpoints6 among them
  } finally {
    obj.close();
  }
  for (const ns of [NODE_NS, POD_NS]) await run(['ip', 'netns', 'add', ns]);
  await run(['ip', '-n', NODE_NS, 'link', 'set', 'lo', 'up']);
}, 120_000);

afterAll(async () => {
  await cleanUp();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('the installed CNI plugin, bundled', () => {
  it("is a shell script that runs the bundle on the tree's pinned Node (the one these tests run on), without NODE_OPTIONS or NODE_EXTRA_CA_CERTS, and with the compile cache as chosen", () => {
    const script = readFileSync(plugin, 'utf8');
    expect(script).toMatch(/^#!\/bin\/sh\n/);
    expect(script).toContain('unset NODE_OPTIONS NODE_EXTRA_CA_CERTS NODE_COMPILE_CACHE\n');
    expect(script).toContain(`exec ${runtimeNode()} ${cniBundle()}\n`);
    expect(runtimeNode()).toBe(path.join(repoRoot(), '.runtime/node/bin/node'));
    expect(realpathSync(runtimeNode())).toBe(realpathSync(process.execPath));
    expect(script.includes(`export NODE_COMPILE_CACHE=${cniCompileCacheDir()}\n`)).toBe(CNI_COMPILE_CACHE);
  });

  it('answers VERSION even when the environment names a CA bundle and Node options that would break Node', async () => {
    const res = await cni('VERSION', 'none', { NODE_OPTIONS: '--require /nonexistent/hook.js', NODE_EXTRA_CA_CERTS: '/nonexistent/ca.pem' });
    expect(res.stderr).toBe('');
    expect(JSON.parse(res.stdout).supportedVersions).toContain('1.0.0');
  });

  it('adds a dual-stack pod through bridge + host-local, records it, and its DEL takes both its map entries out and nothing else', async () => {
    mkdirSync(path.dirname(subnetFile), { recursive: true });
    writeFileSync(
      subnetFile,
      'FLANNEL_NETWORK=10.118.0.0/16\nFLANNEL_SUBNET=10.118.5.1/24\nFLANNEL_IPV6_NETWORK=fd18:118::/48\nFLANNEL_IPV6_SUBNET=fd18:118:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    writePinDirPointer(endpointsDirFor(subnetFile), PIN_DIR); // as the agent does when it starts
    const add = await cni('ADD', 'tk-pod-1');
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const result = JSON.parse(add.stdout) as { ips: { address: string }[] };
    expect(result.ips.map((i) => i.address)).toEqual([expect.stringMatching(/^10\.118\.5\.\d+\/24$/), expect.stringMatching(/^fd18:118:0:5::[0-9a-f]+\/64$/)]);
    const recordFile = path.join(endpointsDirFor(subnetFile), 'tk-pod-1_eth0.json');
    const rec = JSON.parse(readFileSync(recordFile, 'utf8')) as { ip: string; ip6: string; hostVeth: string; bridge: string };
    expect(rec).toMatchObject({ ip: result.ips[0].address.split('/')[0], ip6: result.ips[1].address.split('/')[0], bridge: 'cni0' });
    expect((await run(['ip', '-n', NODE_NS, 'link', 'show', rec.hostVeth])).stdout).toContain('master cni0');

    // The agent's part, done here by hand: the pod's entries, and another pod's that must stay.
    withEndpointMaps(({ v4, v6 }) => {
      v4.put({ ip: rec.ip }, entry);
      v6.put({ ip6: rec.ip6 }, entry);
      v4.put({ ip: '10.118.5.200' }, entry);
      v6.put({ ip6: 'fd18:118:0:5::200' }, entry);
    });
    const del = await cni('DEL', 'tk-pod-1');
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(del.stderr).toBe('');
    const left = withEndpointMaps(({ v4, v6 }) => ({ v4: v4.entries().map(([k]) => k.ip), v6: v6.entries().map(([k]) => k.ip6) }));
    expect(left).toEqual({ v4: ['10.118.5.200'], v6: ['fd18:118:0:5::200'] });
    expect(existsSync(recordFile)).toBe(false);
    expect((await run(['ip', '-n', NODE_NS, 'link', 'show', rec.hostVeth], { allowFailure: true })).code).not.toBe(0);
  });
});
