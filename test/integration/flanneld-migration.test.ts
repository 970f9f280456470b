import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LabNode, LabState } from '../../controller/lab/state.js';
import { flanneld } from '../../controller/lab/peers.js';
import type { UninstallReport } from '../../controller/cli/uninstall.js';
import { run } from '../../controller/util/exec.js';
import { buildBpf, buildTs } from '../support/build.js';
import { stopAll } from '../support/proc.js';
import { bounceAgent, etcdctl, labUpFresh, leaseKey, twill, underTraffic, vxlanDevices } from '../support/lab-session.js';

/*
 * A cluster of real flanneld nodes moved to twill node by node and back, under ping flows between
 * every pod pair and a TCP stream through the moving node, by the procedures the README and
 * deploy/README.md give: flanneld stopped and twill started on the node (it takes over the
 * node's lease); back, twill's kernel mode, `twill uninstall --keep-flannel`, flanneld started.
 * Lab "tfm" on 192.168.146.0/24.
 */
const LAB = 'tfm';
let lab: LabState;
let scratch: string;

beforeAll(async () => {
  buildBpf();
  buildTs();
  flanneld();
  scratch = mkdtempSync(path.join(tmpdir(), 'tfm-'));
  // Every node with --ip-masq: twill takes a node over with flanneld's own flags.
  lab = await labUpFresh(LAB, ['--nodes', '3', '--flanneld-nodes', '3', '--ip-masq', 'all', '--pods-per-node', '1', '--underlay', '192.168.146.0/24']);
}, 300_000);
afterAll(async () => {
  await stopAll();
  await twill(['lab', 'down', '--name', LAB]);
  rmSync(scratch, { recursive: true, force: true });
}, 60_000);

const leaseValue = async (n: LabNode) =>
  JSON.parse((await etcdctl(lab, 'get', '--print-value-only', leaseKey(n.subnet))).stdout) as { PublicIP: string; BackendData: { VtepMAC: string } };

describe(`flanneld to twill and back, node by node, under traffic`, () => {
  const report: string[] = [];
  // One RELIABILITY line per switch, for RELIABILITY.md (scripts/reliability-report.mjs).
  afterAll(() => console.log(report.map((r) => `RELIABILITY flanneld migration (${flanneld().version}): ${r}`).join('\n')));

  it('moves each flanneld node to twill (flanneld stopped, twill agent started on the same lease): nothing lost', async () => {
    for (const n of lab.nodes) {
      const subnetFile = readFileSync(n.subnetFile, 'utf8');
      const mac = (await leaseValue(n)).BackendData.VtepMAC;
      report.push(
        await underTraffic(lab, n, `${n.name} flanneld -> twill`, async () => {
          await bounceAgent(lab, n, 'SIGTERM', [], async () => {
            n.dataplane = 'bpf';
          });
        }),
      );
      // twill took the lease over as it was: same subnet, same VtepMAC, the same subnet file.
      expect(readFileSync(n.subnetFile, 'utf8')).toBe(subnetFile);
      expect((await leaseValue(n)).BackendData.VtepMAC).toBe(mac);
      expect(await vxlanDevices(n.netns)).toEqual([{ ifname: 'twill-rx', external: true, fdbEntries: 0 }]);
    }
  }, 300_000);

  it("moves each twill node back to flanneld by deploy/README.md's rollback (kernel mode, uninstall --keep-flannel, flanneld): nothing lost", async () => {
    for (const n of lab.nodes) {
      const mac = (await leaseValue(n)).BackendData.VtepMAC;
      report.push(
        await underTraffic(lab, n, `${n.name} twill -> flanneld`, async () => {
          await bounceAgent(lab, n, 'SIGTERM', ['--dataplane=kernel']);
          await bounceAgent(lab, n, 'SIGTERM', [], async () => {
            const res = await twill(
              ['uninstall', '--pin-dir', n.pinDir, '--subnet-file', n.subnetFile, '--cni-bin-dir', path.join(scratch, n.name), '--keep-flannel', '--json'],
              n.netns,
            );
            expect(res.code, res.stderr).toBe(0);
            // What flanneld takes over is kept; nothing of twill's is left for it to trip on.
            const kept = (JSON.parse(res.stdout) as UninstallReport).kept.map((k) => k.name);
            expect(kept).toEqual([
              'device flannel.1 and its neighbour, FDB and route entries',
              'iptables nat FLANNEL-POSTRTG, filter FLANNEL-FWD',
              n.subnetFile,
            ]);
            expect(await vxlanDevices(n.netns)).toEqual([{ ifname: 'flannel.1', external: false, fdbEntries: 2 }]);
            expect((await run(['ip', 'link', 'show', 'twill0'], { netns: n.netns, allowFailure: true })).code).not.toBe(0);
            expect(existsSync(n.pinDir)).toBe(false);
            n.dataplane = 'flanneld';
          });
        }),
      );
      expect((await leaseValue(n)).BackendData.VtepMAC).toBe(mac);
      expect(await vxlanDevices(n.netns)).toEqual([{ ifname: 'flannel.1', external: false, fdbEntries: 2 }]);
    }
  }, 300_000);

  it('ends as it began: flanneld on every node, each node routing the others', async () => {
    for (const n of lab.nodes) {
      expect(n.dataplane).toBe('flanneld');
      expect((await run(['ip', 'route', 'show', 'dev', 'flannel.1'], { netns: n.netns })).stdout.trim().split('\n')).toHaveLength(2);
    }
  });
});
