import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

/*
 * The README links to the design in docs/, and the documents link to each other: every relative
 * Markdown link must name a file that exists, and an anchor (`#...`) must be one of the target's
 * headings as GitHub names them.
 */
const root = new URL('../../', import.meta.url).pathname;
const read = (p: string) => readFileSync(path.join(root, p), 'utf8');
const docs = [
  'README.md',
  ...readdirSync(path.join(root, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .sort()
    .map((f) => `docs/${f}`),
  'deploy/README.md',
  'vm-tests/README.md',
];

/** The text outside fenced code blocks and inline code spans (a `[x](y)` in code is no link). */
const prose = (text: string) => text.replace(/^```[\s\S]*?^```/gm, '').replace(/`[^`\n]*`/g, '');

/** GitHub's anchors for a document's headings: lower case, punctuation dropped, spaces to hyphens; repeats get -1, -2... */
export function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of text.replace(/^```[\s\S]*?^```/gm, '').matchAll(/^#{1,6} +(.+?) *#* *$/gm)) {
    const base = m[1]
      .trim()
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** The broken relative links of document NAME (a path under the repository), one sentence each. */
export function brokenLinks(name: string, text: string, readTarget: (p: string) => string | undefined): string[] {
  const problems: string[] = [];
  for (const m of prose(text).matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    const target = m[1];
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
    const [file, anchor] = target.split('#', 2);
    const resolved = file ? path.posix.normalize(path.posix.join(path.posix.dirname(name), file)) : name;
    const body = readTarget(resolved);
    if (body === undefined) {
      problems.push(`${name}: link ${target}: ${resolved} does not exist`);
      continue;
    }
    if (anchor !== undefined && !anchors(body).has(anchor)) problems.push(`${name}: link ${target}: ${resolved} has no heading #${anchor}`);
  }
  return problems;
}

const fromRepo = (p: string): string | undefined => {
  const full = path.join(root, p);
  if (!existsSync(full)) return undefined;
  return p.endsWith('.md') ? readFileSync(full, 'utf8') : '';
};

describe('relative links in the documents', () => {
  it('every README.md, docs/*.md, deploy/README.md and vm-tests/README.md link names an existing file and heading', () => {
    expect(docs.flatMap((d) => brokenLinks(d, read(d), fromRepo))).toEqual([]);
  });

  it('the README links every file of docs/', () => {
    const readme = read('README.md');
    expect(docs.filter((d) => d.startsWith('docs/') && !readme.includes(`](${d})`))).toEqual([]);
  });

  it('negative controls: a missing file, a missing heading; links in code and absolute URLs are not checked', () => {
    const files: Record<string, string> = { 'docs/a.md': '# A title: `x`\n\n## Same\n\n## Same\n', 'README.md': '' };
    const text = [
      '[ok](a.md) [ok](a.md#a-title-x) [ok](a.md#same-1) [ok](../README.md) [self](#here)',
      '[gone](b.md) [bad](a.md#nope) `[code](nowhere.md)` [web](https://example.com/x.md)',
      '```',
      '[fenced](nowhere.md)',
      '```',
      '## Here',
    ].join('\n');
    const got = brokenLinks('docs/c.md', text, (p) => (p === 'docs/c.md' ? text : files[p]));
    expect(got).toEqual(['docs/c.md: link b.md: docs/b.md does not exist', 'docs/c.md: link a.md#nope: docs/a.md has no heading #nope']);
  });
});
