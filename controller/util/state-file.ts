import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
// zod's core: both classic schemas (the agent's) and zod/mini ones (the CNI plugin's) are checked here.
import type { $ZodType, output } from 'zod/v4/core';
import { safeParse } from 'zod/mini';

/*
 * twill's own JSON state files (the attach state, the kernel record, the lab's state, the CNI
 * plugin's endpoint records and saved delegate configs) are read back by later runs, other
 * commands and other versions. A file cut short, hand-edited or written by another version must
 * fail with its path and the field that is wrong, not as a TypeError far from the read.
 */

export class StateFileError extends Error {
  override name = 'StateFileError';
}

/** Pure: `text`, the contents of `file`, checked against `schema`. `what` names the file for a reader ("attach state"). */
export function parseStateFile<S extends $ZodType>(what: string, file: string, text: string, schema: S): output<S> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new StateFileError(`${what} ${file}: not JSON (${(err as Error).message})`);
  }
  const res = safeParse(schema, doc);
  if (!res.success)
    throw new StateFileError(
      `${what} ${file}: ${res.error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'the document'}: ${i.message}`).join('; ')}`,
    );
  return res.data;
}

/** Reads and checks a state file; a missing or unreadable file throws as readFileSync does (callers test existence). */
export function readStateFile<S extends $ZodType>(what: string, file: string, schema: S): output<S> {
  return parseStateFile(what, file, readFileSync(file, 'utf8'), schema);
}

/**
 * Writes a state file whole or not at all (a temporary file renamed over it), so a reader never
 * sees half of one, whenever the writer dies; the directory is made if it is missing.
 */
export function writeStateFile(file: string, doc: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(`${file}.tmp`, JSON.stringify(doc, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}
