import { readFileSync } from 'node:fs';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/build.js';

const testSh = readFileSync(`${repoRoot}/scripts/test.sh`, 'utf8');

describe('formatting and lint (issue 25)', () => {
  it('are checks of the test command of their own, on the pinned runtime, before the suites run', () => {
    for (const line of [
      'run_check format "$runtime" node_modules/prettier/bin/prettier.cjs --check .',
      'run_check lint "$runtime" node_modules/eslint/bin/eslint.js --max-warnings 0 .',
    ]) {
      expect(testSh).toContain(line);
      expect(testSh.indexOf(line)).toBeLessThan(testSh.indexOf('run_part namespace'));
    }
  });

  it("hold the shipped code, the tests and the scripts to the promise rules and to Prettier's 160 columns", async () => {
    const eslint = new ESLint({ cwd: repoRoot });
    const printWidth = (JSON.parse(readFileSync(`${repoRoot}/.prettierrc.json`, 'utf8')) as { printWidth: number }).printWidth;
    expect(printWidth).toBe(160);
    for (const file of ['controller/agent/health.ts', 'test/unit/ci-tally.test.ts', 'vm-tests/qemu.ts', 'scripts/ci-tally.mjs']) {
      const config = (await eslint.calculateConfigForFile(file)) as { rules: Record<string, [number, ...unknown[]]> };
      expect(config.rules['@typescript-eslint/no-floating-promises'][0], file).toBe(2);
      expect(config.rules['@typescript-eslint/no-misused-promises'][0], file).toBe(2);
      expect(config.rules['max-len'], file).toEqual([2, expect.objectContaining({ code: printWidth })]);
    }
  });
});
