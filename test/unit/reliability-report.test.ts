import { describe, expect, it } from 'vitest';
// @ts-expect-error -- a plain ES module without types, run with node alone
import { BEGIN, END, fillCells, measuredLines, replaceBlock } from '../../scripts/reliability-report.mjs';

describe('RELIABILITY.md numbers from a run', () => {
  const output = [
    ' \u001b[32m✓\u001b[39m test/integration/reliability-faults.test.ts',
    '\u001b[22m\u001b[39mRELIABILITY agent SIGKILL x10: 0 of 1871 packets lost',
    'stdout | interop.test.ts',
    'migration report (6 ordered pod pairs, 20 ms interval):',
    '  n1 -> bpf: 0 of 436 packets lost',
    '  n1 -> kernel: 1 of 339 packets lost',
    'something else',
  ].join('\n');

  it('takes the RELIABILITY lines and the migration report, without terminal colours', () => {
    expect(measuredLines(output)).toEqual([
      'agent SIGKILL x10: 0 of 1871 packets lost',
      'migration: n1 -> bpf: 0 of 436 packets lost',
      'migration: n1 -> kernel: 1 of 339 packets lost',
    ]);
  });

  it('replaces only the generated block, and refuses a document without one', () => {
    const doc = `# Reliability\n\n${BEGIN}\n- old line\n${END}\n\n## Faults\n`;
    expect(replaceBlock(doc, ['a: 0 of 1'], 'Run X:')).toBe(`# Reliability\n\n${BEGIN}\nRun X:\n\n- a: 0 of 1\n${END}\n\n## Faults\n`);
    expect(() => replaceBlock('# no markers', [], 'Run X:')).toThrow(/no latest-run markers/);
  });

  it('fills each marked cell with the lines that start with its key, and names the cells no line fills', () => {
    const doc = '| a | <!-- m: agent SIGKILL --><!-- /m -->; asserted |\n| b | <!-- m: migration: -->old<!-- /m --> |\n';
    const lines = ['agent SIGKILL x10: 0 of 5 packets lost', 'migration: n1 -> bpf: 0 of 3 packets lost', 'migration: n1 -> kernel: 1 of 4 packets lost'];
    expect(fillCells(doc, lines)).toBe(
      '| a | <!-- m: agent SIGKILL -->agent SIGKILL x10: 0 of 5 packets lost<!-- /m -->; asserted |\n| b | <!-- m: migration: -->migration: n1 -> bpf: 0 of 3 packets lost; migration: n1 -> kernel: 1 of 4 packets lost<!-- /m --> |\n',
    );
    expect(() => fillCells(doc, lines.slice(1))).toThrow(/cells of: agent SIGKILL$/);
  });
});
