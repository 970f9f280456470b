#!/usr/bin/env node
/*
 * The CI's verdict from the test command's log (stdin): the plain "N passed, N failed" line the
 * CI reads, last. scripts/test.sh runs each part (the namespace suites, the VM tier, the Vagrant
 * smoke run) through run_part, which prints "[twill-test] part NAME exit STATUS" after it; a part
 * prints its own tally line before that if it got as far as its reporter. A part that ended
 * without a tally (crashed, killed) or with a non-zero status but no failure in its tally
 * (unhandled errors, killed after reporting) counts as one more failure, so a green last line
 * means every part ran to its end and said so.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const TALLY = /^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$/;
const PART = /^\[twill-test\] part (\S+) exit (\d+)\s*$/;
const SKIPPED_TIERS = /^\[twill-test\] VM tiers skipped/;
// test/support/tally-reporter.ts names each failed test on a line of its own; repeated next to the
// verdict so the tail of the log the CI keeps says which tests failed.
const FAILED_TEST = /^\[twill-test\] failed: (.*)$/;

/** @returns {{ passed: number, failed: number, skipped: number, problems: string[], failedTests: string[], lines: string[] }} */
export function tally(log) {
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  const problems = [];
  const failedTests = [];
  let pending = [];
  let parts = 0;
  let vmSkipped = false;
  for (const line of log.split('\n')) {
    const t = TALLY.exec(line);
    if (t) {
      pending.push({ passed: Number(t[1]), failed: Number(t[2]), skipped: Number(t[3] ?? 0) });
      continue;
    }
    if (SKIPPED_TIERS.test(line)) vmSkipped = true;
    const f = FAILED_TEST.exec(line);
    if (f) failedTests.push(f[1]);
    const p = PART.exec(line);
    if (!p) continue;
    parts++;
    const [, name, status] = p;
    const own = pending.reduce((a, x) => ({ passed: a.passed + x.passed, failed: a.failed + x.failed, skipped: a.skipped + x.skipped }), {
      passed: 0,
      failed: 0,
      skipped: 0,
    });
    passed += own.passed;
    failed += own.failed;
    skipped += own.skipped;
    if (pending.length === 0) {
      failed++;
      problems.push(`part ${name} ended (status ${status}) without reporting a tally: it crashed or was killed`);
    } else if (status !== '0' && own.failed === 0) {
      failed++;
      problems.push(`part ${name} exited with status ${status} although its tally reports no failure (unhandled errors, or killed after reporting)`);
    }
    pending = [];
  }
  if (parts === 0) {
    failed++;
    problems.push('no part of the test command ran to its end (setup failed?)');
  }
  const lines = [...failedTests.map((f) => `ci: failed: ${f}`), ...problems.map((p) => `ci: ${p}`)];
  if (vmSkipped) lines.push('ci: the VM tiers were skipped (TWILL_VM_TESTS=0)');
  if (skipped) lines.push(`(${skipped} skipped)`);
  lines.push(`${passed} passed, ${failed} failed`);
  return { passed, failed, skipped, problems, failedTests, lines };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const result = tally(readFileSync(0, 'utf8'));
  process.stdout.write(result.lines.join('\n') + '\n');
  process.exit(result.failed ? 1 : 0);
}
