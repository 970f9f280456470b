#!/usr/bin/env node
/*
 * Puts what a run of the VM tier printed into docs/kernels.md's generated block `vm-tier`
 * (scripts/doc-blocks.mjs), naming the command and the commit: the kernel table's rows are the
 * run's `VM tier kernel matrix: ...` lines (vm-tests/cluster.test.ts prints each only once every
 * field of it is asserted), followed by the run's tally and times. A run with a failed test, or
 * without a line for each kernel, writes nothing.
 *   vm-tests/run.sh 2>&1 | node scripts/vm-report.mjs docs/kernels.md
 * (The block moved there from README.md with its header, which names the command as run then.)
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { writeBlockFile } from './doc-blocks.mjs';

export const COMMAND = 'vm-tests/run.sh 2>&1 | node scripts/vm-report.mjs docs/kernels.md';
export const BLOCK = 'vm-tier';
// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

/** The block's Markdown from a run's output; throws when the run failed or printed no matrix. */
export function vmReport(output) {
  const lines = output.replace(ANSI, '').split('\n');
  const tally = lines
    .map((l) => /^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$/.exec(l.trim()))
    .filter(Boolean)
    .at(-1);
  if (!tally) throw new Error('the output has no "N passed, N failed" line: not a whole run of vm-tests/run.sh');
  if (Number(tally[2]) !== 0 || Number(tally[1]) === 0 || Number(tally[3] ?? 0) !== 0) throw new Error(`the run did not pass (${tally[0]}): nothing written`);
  const matrix = lines.map((l) => /VM tier kernel matrix: (kernel (\d+\.\d+)\S*: .*)$/.exec(l)).filter(Boolean);
  if (matrix.length === 0) throw new Error('the run printed no "VM tier kernel matrix:" line');
  const image = lines.map((l) => /\[vm-tests\] guest image ready after (\d+) s/.exec(l)).find(Boolean);
  const took = lines.map((l) => /\[vm-tests\] VM tier took (\d+) s/.exec(l)).find(Boolean);
  return [
    '| kernel | where | auto picked, as printed (`VM tier kernel matrix: ...`); every field asserted by vm-tests/cluster.test.ts |',
    '|---|---|---|',
    ...matrix.map((m) => `| ${m[2]} | VM tier | \`${m[1].trim().replace(/\|/g, '\\|')}\` |`),
    '',
    `That run: ${tally[1]} passed, ${tally[2]} failed${image ? `; guest image ready after ${image[1]} s` : ''}${took ? `; the VM tier took ${took[1]} s in all` : ''} (2 cores shared with other work).`,
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2] ?? 'docs/kernels.md';
  const at = writeBlockFile(file, BLOCK, COMMAND, vmReport(readFileSync(0, 'utf8')));
  console.error(`${file}: block ${BLOCK} written, at ${at}`);
}
