import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const bpfBuildDir = path.join(repoRoot, 'bpf/build');

/** Builds the BPF objects (make is incremental, so this is cheap when they are current). */
export function buildBpf(): void {
  execFileSync('make', ['-s', '-C', path.join(repoRoot, 'bpf')], { stdio: 'inherit' });
}

/** Builds the TypeScript into dist/ for tests that run the CLI as a separate process, and bundles the CNI plugin and the agent's Kubernetes client from it. */
export function buildTs(): void {
  execFileSync('npx', ['tsc', '-p', path.join(repoRoot, 'tsconfig.json')], { stdio: 'inherit', cwd: repoRoot });
  for (const script of ['scripts/bundle-cni.mjs', 'scripts/bundle-kube-client.mjs'])
    execFileSync(process.execPath, [path.join(repoRoot, script)], { stdio: 'inherit', cwd: repoRoot });
}

export const cliPath = path.join(repoRoot, 'dist/controller/cli.js');
