#!/usr/bin/env node
/*
 * Generated blocks in the documents, and the check that keeps typed numbers out of them.
 *
 * A number a document quotes as a measurement lives in a generated block, written by the script
 * that measured it (or by this one, from that program's output), never typed:
 *
 *   <!-- generated: ID by `COMMAND` at COMMIT -->
 *   ...what the program printed...
 *   <!-- /generated: ID -->
 *
 * COMMIT is filled in by the writer (`git rev-parse --short HEAD`), which refuses a working tree
 * with changes other than the document it writes: the numbers are then the named commit's.
 * Prose elsewhere quotes a figure of a block by citing it:
 *
 *   <!-- from: ID -->1.9x<!-- /from -->
 *
 * and every number inside the citation must be in the block. test/unit/doc-numbers.test.ts runs
 * checkDocuments over README.md, docs/*.md, deploy/README.md and vm-tests/README.md: a block whose commit is
 * not in the history, a citation of a number its block lacks, or a measurement-looking number
 * outside blocks and citations (and not on the test's allowlist of specifications) fails it.
 * (RELIABILITY.md's latest-run block and BENCHMARKS.md are written whole by their own scripts;
 * the test checks the commits they name too.)
 *
 * Writing a block from a program's output (stdin):
 *   PROGRAM | node scripts/doc-blocks.mjs write FILE ID --command 'PROGRAM'
 *   PROGRAM | node scripts/doc-blocks.mjs write FILE ID --section '## HEADING'
 * --section keeps that Markdown section of the output (up to the next heading of its level or
 * above), and takes the command and commit from the output's own `Command:` and `Commit:` lines
 * (as `twill bench` prints them), refusing a commit that is not HEAD.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BLOCK = /<!-- generated: ([\w.-]+) by `([^`]*)` at (\S+) -->\n([\s\S]*?)<!-- \/generated: ([\w.-]+) -->/g;
const OPEN = /<!-- generated: /g;
const CITE = /<!-- from: ([\w.-]+) -->([\s\S]*?)<!-- \/from -->/g;

/** The generated blocks of a document, with where they are. */
export function blocks(doc) {
  return [...doc.matchAll(BLOCK)].map((m) => ({
    id: m[1],
    command: m[2],
    commit: m[3],
    body: m[4],
    closeId: m[5],
    start: m.index,
    end: m.index + m[0].length,
  }));
}

/** The citations of a document: `<!-- from: ID -->text<!-- /from -->`. */
export function citations(doc) {
  return [...doc.matchAll(CITE)].map((m) => ({ id: m[1], text: m[2], start: m.index, end: m.index + m[0].length }));
}

/** The numbers in a text, thousands separators dropped: "10,000 at 1.52x" -> ["10000", "1.52"]. */
export function numbers(text) {
  return [...text.matchAll(/\d+(?:,\d{3})*(?:\.\d+)?/g)].map((m) => m[0].replace(/,/g, ''));
}

const UNIT = String.raw`(?:ms|MB|MiB|GB|GiB|KB|KiB|kB|s|us|µs|ns|Gbit/s|Mbit/s|kpps|pps|min|minutes?|seconds?|h|hours?)`;
const MEASURE = new RegExp(String.raw`(?<![\w.])\d+(?:[.,]\d+)*(?:\s?${UNIT}(?![\w/])|\s?%|x\b)`, 'g');

/** Measurement-looking numbers (a time, a size, a rate, a share or a ratio like 1.52x) and where. */
export function measurements(text) {
  return [...text.matchAll(MEASURE)].map((m) => ({ text: m[0], start: m.index, end: m.index + m[0].length }));
}

const lineOf = (doc, at) => doc.slice(0, at).split('\n').length;

/**
 * Every problem of a set of documents, one sentence each (none: the documents are honest).
 *   docs: [{ name, text }]; isAncestor(commit): whether HEAD's history holds it;
 *   allow: [{ phrase, reason }]: phrases holding a number that is a specification, not a measurement.
 */
export function checkDocuments(docs, isAncestor, allow = []) {
  const problems = [];
  const byId = new Map();
  for (const d of docs) {
    const bs = blocks(d.text);
    const opened = [...d.text.matchAll(OPEN)].length;
    if (opened !== bs.length)
      problems.push(
        `${d.name}: ${opened - bs.length} generated block(s) not well formed (want "<!-- generated: ID by \`COMMAND\` at COMMIT -->" ... "<!-- /generated: ID -->")`,
      );
    for (const b of bs) {
      const where = `${d.name}:${lineOf(d.text, b.start)}`;
      if (b.closeId !== b.id) problems.push(`${where}: block ${b.id} is closed as ${b.closeId}`);
      if (byId.has(b.id)) problems.push(`${where}: block id ${b.id} is used twice`);
      byId.set(b.id, b);
      if (!/^[0-9a-f]{7,40}$/.test(b.commit) || !isAncestor(b.commit))
        problems.push(`${where}: block ${b.id} names commit ${b.commit}, which is not in this history`);
      if (!b.command.trim()) problems.push(`${where}: block ${b.id} names no command`);
    }
  }
  for (const d of docs) {
    for (const c of citations(d.text)) {
      const where = `${d.name}:${lineOf(d.text, c.start)}`;
      const b = byId.get(c.id);
      if (!b) {
        problems.push(`${where}: cites block ${c.id}, which no document has`);
        continue;
      }
      const have = new Set(numbers(b.body));
      const got = numbers(c.text);
      if (got.length === 0) problems.push(`${where}: citation of ${c.id} quotes no number`);
      for (const n of got) if (!have.has(n)) problems.push(`${where}: cites ${n} from block ${c.id}, which does not contain it ("${c.text}")`);
    }
  }
  for (const d of docs) {
    if (!d.lint) continue;
    const covered = [...blocks(d.text), ...citations(d.text)].map((x) => [x.start, x.end]);
    // A phrase matches across line breaks: the documents are wrapped by hand.
    for (const { phrase } of allow) {
      const re = new RegExp(
        phrase
          .split(/\s+/)
          .map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
          .join('\\s+'),
        'g',
      );
      for (const m of d.text.matchAll(re)) covered.push([m.index, m.index + m[0].length]);
    }
    for (const m of measurements(d.text)) {
      if (covered.some(([a, b]) => m.start >= a && m.end <= b)) continue;
      problems.push(
        `${d.name}:${lineOf(d.text, m.start)}: "${m.text}" looks like a measurement typed by hand: generate it (scripts/doc-blocks.mjs), cite a block, remove it, or allowlist it as a specification`,
      );
    }
  }
  return problems;
}

/** `git merge-base --is-ancestor COMMIT HEAD` in a checkout. */
export const ancestorIn = (cwd) => (commit) => spawnSync('git', ['merge-base', '--is-ancestor', commit, 'HEAD'], { cwd }).status === 0;

/** HEAD's short hash; throws when the tree differs from it outside `except` (the document being written). */
export function cleanHead(cwd, except = []) {
  const git = (args) => spawnSync('git', args, { cwd, encoding: 'utf8' });
  const head = git(['rev-parse', '--short', 'HEAD']);
  if (head.status !== 0) throw new Error(`not a git checkout: ${cwd}`);
  const changed = git(['status', '--porcelain', '--untracked-files=no', '--', '.', ...except.map((f) => `:!${f}`)]).stdout.trim();
  if (changed)
    throw new Error(
      `the working tree has uncommitted changes (${changed.split('\n').join('; ')}): commit them first, so that the block names the commit that produced its numbers`,
    );
  return head.stdout.trim();
}

/** The document with block ID's contents and header replaced; throws when it has no such block. */
export function writeBlock(doc, id, { command, commit, body }) {
  const b = blocks(doc).find((x) => x.id === id);
  if (!b) throw new Error(`no block "${id}" ("<!-- generated: ${id} by \`...\` at ... -->" ... "<!-- /generated: ${id} -->") in the document`);
  if (command.includes('`')) throw new Error('a command with a backquote cannot be named in a block header');
  const text = `<!-- generated: ${id} by \`${command}\` at ${commit} -->\n${body.replace(/\n*$/, '\n')}<!-- /generated: ${id} -->`;
  return doc.slice(0, b.start) + text + doc.slice(b.end);
}

/** HEAD of the checkout holding FILE; throws when the tree differs from it but for FILE. */
export function cleanHeadFor(file) {
  const root = spawnSync('git', ['rev-parse', '--show-toplevel'], { cwd: path.dirname(path.resolve(file)), encoding: 'utf8' }).stdout.trim();
  return cleanHead(root, [path.relative(root, path.resolve(file))]);
}

/** Writes block ID of FILE with what a program printed, naming the command and HEAD (which must be clean but for FILE). */
export function writeBlockFile(file, id, command, body, commit) {
  const head = cleanHeadFor(file);
  if (commit !== undefined && commit !== head) throw new Error(`the output was produced at commit ${commit}, not at HEAD (${head})`);
  writeFileSync(file, writeBlock(readFileSync(file, 'utf8'), id, { command, commit: head, body }));
  return head;
}

/** The Markdown section starting at the heading line `heading`, up to the next heading of its level or above. */
export function section(text, heading) {
  const lines = text.split('\n');
  const at = lines.findIndex((l) => l.trim() === heading.trim());
  if (at < 0) throw new Error(`the output has no section "${heading}"`);
  const level = /^#+/.exec(heading.trim())[0].length;
  let end = lines.findIndex((l, i) => i > at && /^#+ /.test(l) && /^#+/.exec(l)[0].length <= level);
  if (end < 0) end = lines.length;
  return (
    lines
      .slice(at + 1, end)
      .join('\n')
      .trim() + '\n'
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [verb, file, id, ...rest] = process.argv.slice(2);
  const opt = (name) => {
    const i = rest.indexOf(name);
    return i >= 0 ? rest[i + 1] : undefined;
  };
  if (verb !== 'write' || !file || !id) {
    console.error("usage: PROGRAM | node scripts/doc-blocks.mjs write FILE ID (--command 'PROGRAM' | --section '## HEADING')");
    process.exit(2);
  }
  const input = readFileSync(0, 'utf8');
  let command = opt('--command');
  let commit;
  let body = input;
  if (opt('--section')) {
    body = section(input, opt('--section'));
    command ??= /^Command: `([^`]+)`/m.exec(input)?.[1];
    commit = /Commit: ([^.\s]+)([^.]*)\./.exec(input);
    if (!commit) throw new Error('the output names no "Commit:"');
    if (commit[2].trim()) throw new Error(`the output was produced at ${commit[1]}${commit[2]}: commit first`);
    commit = commit[1];
  }
  if (!command) throw new Error('name the command that produced the output (--command), or give output with a "Command:" line');
  const head = writeBlockFile(file, id, command, body, commit);
  console.error(`${file}: block ${id} written, at ${head}`);
}
