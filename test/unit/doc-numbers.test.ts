import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain ES module script, no types
import { ancestorIn, checkDocuments, measurements, writeBlock } from '../../scripts/doc-blocks.mjs';
// @ts-expect-error: a plain ES module script, no types
import { BLOCK as VM_BLOCK, COMMAND as VM_COMMAND, vmReport } from '../../scripts/vm-report.mjs';

/*
 * Every number the documents quote as a measurement was printed by a program at a commit of this
 * history (scripts/doc-blocks.mjs). Numbers that are specifications stay typed; each is listed
 * here with the reason it is not a measurement.
 */
const root = new URL('../../', import.meta.url);
const read = (p: string) => readFileSync(new URL(p, root), 'utf8');
const isAncestor = ancestorIn(root.pathname) as (c: string) => boolean;
type Problem = string;
const check = (docs: { name: string; text: string; lint?: boolean }[], allow = ALLOW): Problem[] => checkDocuments(docs, isAncestor, allow);

/** Phrases holding a number that is a specification (a default, a period in the code, a test's parameter, a target), not a measurement. */
export const ALLOW = [
  { phrase: 'default 24 h', reason: "--subnet-lease-ttl's default (controller/cli/options.ts)" },
  { phrase: 'every 30 s', reason: "periods in the code: the etcd warning's repeat, the config report, the endpoints resync; deploy's ServiceMonitor interval" },
  { phrase: 'every 10 s', reason: 'the period at which the agent re-reads the network config' },
  { phrase: '1 MB young-generation semi-space', reason: "bin/twill's --max-semi-space-size=1" },
  { phrase: '256 MB old space', reason: "bin/twill's --max-old-space-size=256" },
  { phrase: '120 MB target', reason: "the control-plane bench's memory target (controller/bench/control-plane.ts)" },
  { phrase: '30 ms budget', reason: "issue 14's CNI budget (controller/bench/cni-cost.ts)" },
  { phrase: 'at most 30 ms', reason: "issue 14's CNI budget (controller/bench/cni-cost.ts)" },
  { phrase: '200 ms later', reason: "removeKernelVxlan's drainMs (controller/dataplane/flannel-vxlan.ts)" },
  { phrase: 'every 20 ms', reason: "the tests' ping interval" },
  { phrase: 'every 100 ms', reason: "the agent's event-loop sampling interval (controller/metrics)" },
  { phrase: 'default 10 ms', reason: "prom-client's default sampling interval, which twill does not use" },
  { phrase: 'within 5 s', reason: 'MONITOR_CHECK_MS in controller/agent/agent.ts' },
  { phrase: '5 s apart', reason: 'RestartSec=5 in deploy/systemd/twill.service' },
  { phrase: '(256 KB)', reason: "twill_events' size in bpf/include/twill_maps.h" },
  { phrase: 'stopped for 60 s', reason: "the fault test's outage, a parameter" },
  { phrase: '768 MB each', reason: "the QEMU guests' memory (vm-tests/qemu.ts)" },
];

/** docs/*.md: the design, moved out of README.md, under the same rule. */
const docsFiles = (): string[] =>
  existsSync(new URL('docs/', root))
    ? readdirSync(new URL('docs/', root))
        .filter((f) => f.endsWith('.md'))
        .sort()
        .map((f) => `docs/${f}`)
    : [];

describe('the documents quote measurements only from generated blocks', () => {
  const docs = [
    { name: 'README.md', text: read('README.md'), lint: true },
    { name: 'deploy/README.md', text: read('deploy/README.md'), lint: true },
    { name: 'vm-tests/README.md', text: read('vm-tests/README.md'), lint: true },
    ...docsFiles().map((name) => ({ name, text: read(name), lint: true })),
  ];

  it('has blocks naming commits of this history, citations their blocks hold, and no measurement typed by hand', () => {
    expect(check(docs)).toEqual([]);
  });

  it('names, in BENCHMARKS.md and RELIABILITY.md (written whole by their scripts), commits of this history', () => {
    const bench = /^Date: .*Commit: ([0-9a-f]{7,40})\./m.exec(read('BENCHMARKS.md'));
    const reliability = /^Run of .* at commit ([0-9a-f]{7,40})\b/m.exec(read('RELIABILITY.md'));
    expect([bench?.[1], reliability?.[1]].map((c) => c !== undefined && isAncestor(c))).toEqual([true, true]);
  });

  it('allows every phrase of the allowlist somewhere (an entry no document needs is removed)', () => {
    const all = docs
      .map((d) => d.text)
      .join('\n')
      .replace(/\s+/g, ' ');
    expect(ALLOW.filter((a) => !all.includes(a.phrase)).map((a) => a.phrase)).toEqual([]);
  });
});

describe('negative controls: the check reports each defect', () => {
  const fixture = { name: 'defects.md', text: read('test/fixtures/doc-numbers/defects.md'), lint: true };
  const problems = check([fixture]);

  it('a block naming a commit that is not in the history', () => {
    expect(problems).toContainEqual(expect.stringMatching(/defects\.md:3: block fixture-ghost names commit deadbee, which is not in this history/));
    expect(problems.filter((p) => p.includes('fixture-real names'))).toEqual([]);
  });

  it('a citation of a number its block does not contain', () => {
    expect(problems).toContainEqual(expect.stringMatching(/cites 0\.56 from block fixture-real, which does not contain it/));
    expect(problems.filter((p) => /cites (152\.7|0\.52) /.test(p))).toEqual([]);
  });

  it('a measurement typed by hand, but not one the allowlist names as a specification', () => {
    expect(problems).toContainEqual(expect.stringMatching(/defects\.md:\d+: "64\.9 ms" looks like a measurement typed by hand/));
    expect(problems.filter((p) => p.includes('"10 s"'))).toEqual([]);
    expect(check([fixture], [])).toContainEqual(expect.stringMatching(/"10 s" looks like a measurement/));
  });

  it('exactly those three', () => {
    expect(problems).toHaveLength(3);
  });

  it('a citation of a block no document has, and a block closed under another id', () => {
    const text = '<!-- generated: a by `x` at 15aa35c -->\n1 s\n<!-- /generated: b -->\n<!-- from: c -->2 s<!-- /from -->';
    expect(check([{ name: 'd.md', text }])).toEqual([
      expect.stringMatching(/generated block\(s\) not well formed|closed as b/),
      expect.stringMatching(/cites block c, which no document has/),
    ]);
  });
});

describe('writing a block', () => {
  const doc = 'a\n<!-- generated: x by `old` at 15aa35c -->\nold 1 s\n<!-- /generated: x -->\nb\n';
  it('replaces its contents and header, and nothing else', () => {
    expect(writeBlock(doc, 'x', { command: 'node m.mjs', commit: 'abcdef1', body: 'new 2 s' })).toBe(
      'a\n<!-- generated: x by `node m.mjs` at abcdef1 -->\nnew 2 s\n<!-- /generated: x -->\nb\n',
    );
  });
  it('refuses a document without the block', () => {
    expect(() => writeBlock(doc, 'y', { command: 'c', commit: 'abcdef1', body: '' })).toThrow(/no block "y"/);
  });
  it('finds measurements by unit and ratio, not hex or versions', () => {
    expect(measurements('0x4000, v0.28.10, 6.12, 1.52x, 3 kpps, 24.3 Gbit/s, 17%, 5 minutes').map((m: { text: string }) => m.text)).toEqual([
      '1.52x',
      '3 kpps',
      '24.3 Gbit/s',
      '17%',
      '5 minutes',
    ]);
  });
});

describe("the VM tier's block", () => {
  const run = [
    '[vm-tests] guest image ready after 3 s',
    ' \u001b[32m✓\u001b[39m vm-tests/cluster.test.ts',
    'VM tier kernel matrix: kernel 6.12.95+deb12-amd64: bpf attach=tcx decap=xdp path=fast | btf=yes tcx=yes xdpNative=yes',
    'VM tier kernel matrix: kernel 6.1.0-50-amd64: bpf attach=clsact decap=xdp path=fast | btf=yes tcx=no xdpNative=yes',
    '',
    '10 passed, 0 failed',
    '[vm-tests] VM tier took 512 s',
  ].join('\n');
  it("is the kernel table, one row per printed matrix line, and the run's tally and time", () => {
    const block = vmReport(run) as string;
    expect(block).toContain('| 6.12 | VM tier | `kernel 6.12.95+deb12-amd64: bpf attach=tcx decap=xdp path=fast \\| btf=yes tcx=yes xdpNative=yes` |');
    expect(block).toContain('| 6.1 | VM tier | `kernel 6.1.0-50-amd64: bpf attach=clsact');
    expect(block).toContain('10 passed, 0 failed; guest image ready after 3 s; the VM tier took 512 s in all');
  });
  it('is written by scripts/vm-report.mjs into the document that holds it (docs/kernels.md, since the design left README.md)', () => {
    const file = /vm-report\.mjs (\S+)$/.exec(VM_COMMAND as string)?.[1];
    expect(file).toBe('docs/kernels.md');
    expect(read(file!)).toContain(`<!-- generated: ${VM_BLOCK as string} by`);
  });
  it('is refused from a run with a failure or a skipped test, or without a matrix line', () => {
    expect(() => vmReport(run.replace('0 failed', '1 failed'))).toThrow(/did not pass/);
    expect(() => vmReport(run.replace('0 failed', '0 failed, 2 skipped'))).toThrow(/did not pass/);
    expect(() => vmReport(run.replace(/VM tier kernel matrix/g, 'x'))).toThrow(/no "VM tier kernel matrix:"/);
  });
});
