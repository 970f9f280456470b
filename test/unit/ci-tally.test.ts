import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// @ts-expect-error -- a plain ES module without types: the CI runs it with node alone
import { tally } from '../../scripts/ci-tally.mjs';
import { repoRoot } from '../support/build.js';
import { failureLine } from '../support/tally-reporter.js';

type Tally = { passed: number; failed: number; skipped: number; problems: string[]; failedTests: string[]; lines: string[] };
const verdict = (log: string) => tally(log) as Tally;
const last = (t: Tally) => t.lines[t.lines.length - 1];

describe("the CI's verdict from the test command's log", () => {
  it('sums the parts that ran to their end', () => {
    const t = verdict(
      '...\n380 passed, 0 failed, 2 skipped\n[twill-test] part namespace exit 0\n5 passed, 0 failed\n[twill-test] part vm exit 0\n6 passed, 0 failed\n[twill-test] part vagrant exit 0\n',
    );
    expect(t.lines).toEqual(['(2 skipped)', '391 passed, 0 failed']);
  });

  it('counts a part that crashed before its reporter printed as a failure', () => {
    const t = verdict(
      '380 passed, 0 failed\n[twill-test] part namespace exit 0\nqemu: killed\n[twill-test] part vm exit 137\n6 passed, 0 failed\n[twill-test] part vagrant exit 0\n',
    );
    expect(last(t)).toBe('386 passed, 1 failed');
    expect(t.problems).toEqual(['part vm ended (status 137) without reporting a tally: it crashed or was killed']);
  });

  it('counts a non-zero exit whose tally shows no failure (unhandled errors) as a failure', () => {
    const t = verdict('Unhandled Errors\n12 passed, 0 failed\n[twill-test] part namespace exit 1\n');
    expect(last(t)).toBe('12 passed, 1 failed');
  });

  it('names each failed test next to the verdict, where the tail of a long log still shows it', () => {
    const failed = failureLine(
      `${process.cwd()}/test/integration/kube-mode.test.ts > kube > deletes a Node`,
      '\x1b[31mexpected 3 to be 2\x1b[39m\n  at x.ts:1',
    );
    expect(failed).toBe('[twill-test] failed: test/integration/kube-mode.test.ts > kube > deletes a Node: expected 3 to be 2');
    const t = verdict(
      `${failed}\n11 passed, 1 failed\n[twill-test] part namespace exit 1\n(long VM output)\n6 passed, 0 failed\n[twill-test] part vagrant exit 0\n`,
    );
    expect(t.lines).toEqual(['ci: failed: test/integration/kube-mode.test.ts > kube > deletes a Node: expected 3 to be 2', '17 passed, 1 failed']);
    expect(verdict('12 passed, 0 failed\n[twill-test] part namespace exit 0\n').failedTests).toEqual([]);
  });

  it("folds an assertion's actual value into the same line, so the tail says what was wrong", () => {
    const line = failureLine('t.ts > loss', 'expected [ Array(1) ] to deeply equal []', '[\n  {\n    "from": "n1",\n    "lost": 3\n  }\n]');
    expect(line).toBe('[twill-test] failed: t.ts > loss: expected [ Array(1) ] to deeply equal [] | actual: [ { "from": "n1", "lost": 3 } ]');
    expect(failureLine('t.ts > big', 'x', 'y'.repeat(5000)).length).toBeLessThan(1300);
    expect(verdict(`${line}\n0 passed, 1 failed\n[twill-test] part namespace exit 1\n`).failedTests).toEqual([line.slice('[twill-test] failed: '.length)]);
  });

  it('does not count a failure twice when the tally already has it', () => {
    expect(last(verdict('11 passed, 1 failed\n[twill-test] part namespace exit 1\n'))).toBe('11 passed, 1 failed');
  });

  it('fails when no part got to its end, and says when the VM tiers were skipped', () => {
    expect(last(verdict('npm ERR! setup failed\n'))).toBe('0 passed, 1 failed');
    const t = verdict('3 passed, 0 failed\n[twill-test] part namespace exit 0\n[twill-test] VM tiers skipped (TWILL_VM_TESTS=0)\n');
    expect(t.lines).toEqual(['ci: the VM tiers were skipped (TWILL_VM_TESTS=0)', '3 passed, 0 failed']);
  });

  it('end to end: a fake suite killed by SIGKILL, run as scripts/test.sh runs its parts, turns the last line red', () => {
    const script = `. scripts/test-parts.sh; run_part fake node -e 'process.kill(process.pid, "SIGKILL")'; run_part ok node -e 'console.log("2 passed, 0 failed")'; echo rc=$rc`;
    const run = spawnSync('bash', ['-c', `(${script}) | node scripts/ci-tally.mjs`], { cwd: repoRoot, encoding: 'utf8' });
    const out = run.stdout.trim().split('\n');
    expect(out[out.length - 1]).toBe('2 passed, 1 failed');
    expect(out).toContain('ci: part fake ended (status 137) without reporting a tally: it crashed or was killed');
    expect(run.status).toBe(1);
  });

  it('counts the type check as one test of its own, failed when tsc fails', () => {
    const script = `. scripts/test-parts.sh; run_check good true; run_check bad false; echo rc=$rc`;
    const log = spawnSync('bash', ['-c', script], { cwd: repoRoot, encoding: 'utf8' }).stdout;
    expect(log).toBe('1 passed, 0 failed\n[twill-test] part good exit 0\n0 passed, 1 failed\n[twill-test] part bad exit 1\nrc=1\n');
    expect(last(verdict(log))).toBe('1 passed, 1 failed');
  });

  it('type-checks the tests with the code before the suites run', () => {
    const testSh = readFileSync(`${repoRoot}/scripts/test.sh`, 'utf8');
    expect(testSh.indexOf('run_check typecheck "$runtime" node_modules/typescript/bin/tsc -p tsconfig.test.json')).toBeGreaterThan(-1);
    expect(testSh.indexOf('run_check typecheck')).toBeLessThan(testSh.indexOf('run_part namespace'));
    const tsconfig = JSON.parse(readFileSync(`${repoRoot}/tsconfig.test.json`, 'utf8')) as { include: string[] };
    expect(tsconfig.include).toEqual(expect.arrayContaining(['controller/**/*.ts', 'test/**/*.ts']));
  });
});
