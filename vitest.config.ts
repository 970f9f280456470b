import { defineConfig } from 'vitest/config';

// Integration tests share the kernel (namespaces, bpffs, etcd ports): run files one
// at a time so two suites never fight over the same machine-wide resources.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 180_000,
    reporters: ['default', './test/support/tally-reporter.ts'],
  },
});
