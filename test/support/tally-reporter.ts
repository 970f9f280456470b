import type { Reporter, TestModule } from 'vitest/node';

// CI reads only a plain "N passed, N failed" line; vitest's own summary is not parsed there.
// Each failure also gets one plain "[twill-test] failed: ..." line, which scripts/ci-tally.mjs
// repeats next to its verdict: the CI keeps only the tail of a long log, where vitest's own
// failure report (printed before the VM tiers run) is long gone.
export default class TallyReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const failures: string[] = [];
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const result = test.result();
        if (result.state === 'passed') passed++;
        else if (result.state === 'failed') {
          failed++;
          failures.push(failureLine(`${mod.moduleId} > ${test.fullName}`, result.errors?.[0]?.message, result.errors?.[0]?.actual));
        } else skipped++;
      }
      // A file that failed to load or whose hooks threw has no test results of its own.
      if (mod.state() === 'failed' && [...mod.children.allTests()].every((t) => t.result().state !== 'failed')) {
        failed++;
        failures.push(failureLine(mod.moduleId, mod.errors()[0]?.message));
      }
    }
    const lines = failures.map((f) => `${f}\n`).join('');
    process.stdout.write(`\n${lines}${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}\n`);
  }
}

const root = `${process.cwd()}/`;
// vitest colours assertion messages; the CI's log is plain text.
const ANSI_COLOUR = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');

/**
 * One line per failure: where, the first line of why, and what an assertion got (vitest prints it
 * across many lines; folded into one here), each trimmed so a log's tail stays readable. A
 * message alone says "expected [ Array(4) ] to deeply equal []"; the value says which 4.
 */
export function failureLine(where: string, message: string | undefined, actual?: string): string {
  const why = (message ?? 'no error message').split('\n')[0].replace(ANSI_COLOUR, '').slice(0, 240);
  const got = actual === undefined ? '' : ` | actual: ${actual.replace(/\s*\n\s*/g, ' ').slice(0, 1200)}`;
  return `[twill-test] failed: ${where.startsWith(root) ? where.slice(root.length) : where}: ${why}${got}`;
}
