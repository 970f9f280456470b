import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { kubeApiserver, kubeControllerManager, kubectl, parseVersionsFile, PeerMissingError } from '../../controller/lab/peers.js';
import { repoRoot } from '../support/build.js';

describe('the pinned real peers (scripts/peers/versions.env)', () => {
  it('parses KEY=value lines and skips comments', () => {
    expect(parseVersionsFile('# a comment\nA=1\n\nB_2=v0.1.0  \nnot a line\n')).toEqual({ A: '1', B_2: 'v0.1.0' });
  });

  it('names an exact release of each program, and the flanneld build module requires the same one', () => {
    const v = parseVersionsFile(readFileSync(path.join(repoRoot, 'scripts/peers/versions.env'), 'utf8'));
    for (const key of ['FLANNELD_VERSION', 'FLANNEL_CNI_VERSION', 'KUBERNETES_VERSION']) expect(v[key], key).toMatch(/^v\d+\.\d+\.\d+$/);
    const goMod = readFileSync(path.join(repoRoot, 'scripts/peers/flanneld/go.mod'), 'utf8');
    expect(goMod).toContain(`require ${v.FLANNELD_MODULE} ${v.FLANNELD_VERSION}\n`);
  });

  it('builds Kubernetes from one release: the build module requires it and pins every staging module it replaces at the matching v0', () => {
    const v = parseVersionsFile(readFileSync(path.join(repoRoot, 'scripts/peers/versions.env'), 'utf8'));
    const goMod = readFileSync(path.join(repoRoot, 'scripts/peers/kubernetes/go.mod'), 'utf8');
    expect(goMod).toContain(`require ${v.KUBERNETES_MODULE} ${v.KUBERNETES_VERSION}\n`);
    const staging = `v0.${v.KUBERNETES_VERSION.slice('v1.'.length)}`;
    const replaced = [...goMod.matchAll(/^\s*(k8s\.io\/\S+) => (\S+) (\S+)$/gm)];
    expect(replaced.length).toBeGreaterThan(20);
    for (const [, from, to, version] of replaced) expect(`${from} => ${to} ${version}`).toBe(`${from} => ${from} ${staging}`);
  });

  it('names the module and the release of a Kubernetes program that is not built, rather than running anything else', () => {
    const empty = mkdtempSync(path.join(os.tmpdir(), 'tkcp-peers-'));
    const before = process.env.TWILL_PEERS_CACHE;
    process.env.TWILL_PEERS_CACHE = empty;
    try {
      for (const accessor of [kubeApiserver, kubeControllerManager, kubectl]) {
        expect(accessor).toThrow(PeerMissingError);
        expect(accessor).toThrow(/v1\.\d+\.\d+ \(module k8s\.io\/kubernetes\) is not built/);
      }
    } finally {
      if (before === undefined) delete process.env.TWILL_PEERS_CACHE;
      else process.env.TWILL_PEERS_CACHE = before;
      rmSync(empty, { recursive: true });
    }
  });
});
