#!/usr/bin/env node
// Replaces dist/controller/kube/client.js (tsc's re-export of the parts of @kubernetes/client-node
// the agent uses) with a rolldown bundle of it, tree-shaken to those parts: the package's index
// loads every API group's client and models, which the agent's kube mode paid for in resident
// memory (controller/kube/client.ts). Run after tsc; the file works unbundled too.
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { rolldown } from 'rolldown';

const entry = path.join(path.dirname(fileURLToPath(import.meta.url)), '../dist/controller/kube/client.js');
const bundle = await rolldown({ input: entry, platform: 'node', logLevel: 'warn' });
try {
  const { output } = await bundle.generate({ format: 'esm', codeSplitting: false });
  if (output.length !== 1) throw new Error(`bundle-kube-client: expected one file, rolldown made ${output.map((c) => c.fileName).join(', ')}`);
  // Written aside and renamed: an agent starting meanwhile reads the old file or the new one.
  writeFileSync(`${entry}.tmp`, output[0].code);
  renameSync(`${entry}.tmp`, entry);
} finally {
  await bundle.close();
}
