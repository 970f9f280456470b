import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shellWord } from '../../controller/util/exec.js';

describe('shellWord: a command line as printed runs again as it was given', () => {
  it('leaves plain words alone and quotes the rest', () => {
    expect(['--modes', 'veth,wire', '--out', 'BENCHMARKS.md'].map(shellWord).join(' ')).toBe('--modes veth,wire --out BENCHMARKS.md');
    expect(shellWord('')).toBe("''");
  });

  it('gives a shell back every argument, empty ones, spaces and quotes included', () => {
    const args = ['', 'a b', "it's", '$HOME', '--x=1'];
    const echoed = execFileSync('sh', ['-c', `for a in ${args.map(shellWord).join(' ')}; do printf '[%s]' "$a"; done`], { encoding: 'utf8' });
    expect(echoed).toBe(args.map((a) => `[${a}]`).join(''));
  });
});
