import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// The VM tier (vm-tests/run.sh): QEMU guests under TCG, so hooks get long timeouts; one file.
export default defineConfig({
  root: fileURLToPath(new URL('..', import.meta.url)),
  test: {
    include: ['vm-tests/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 1_800_000,
    reporters: ['default', './test/support/tally-reporter.ts'],
  },
});
