#!/usr/bin/env node
// Bundles the CNI plugin (dist/controller/cni/main.js, from tsc) into one CommonJS file,
// dist/controller/cni/twill-cni.cjs, which `twill cni install` points the plugin at. The
// container runtime starts a process per pod ADD and DEL; one pre-linked script spares each of
// them the ES module loader resolving and linking dozens of files (zod alone is ~100), which cost
// more than Node's own start-up (README, "CNI"). koffi stays external: it loads a native addon
// found relative to its package, and the plugin requires it only on a DEL that edits a map.
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { rolldown } from 'rolldown';

const cniDir = path.join(path.dirname(fileURLToPath(import.meta.url)), '../dist/controller/cni');
const bundle = await rolldown({ input: path.join(cniDir, 'main.js'), platform: 'node', external: ['koffi'], logLevel: 'warn' });
try {
  const { output } = await bundle.generate({ format: 'cjs', entryFileNames: 'twill-cni.cjs', chunkFileNames: 'twill-cni-[name].cjs' });
  // Written aside and renamed, the entry last: a plugin process running meanwhile reads old files or new ones.
  for (const chunk of output.sort((a, b) => Number(a.isEntry) - Number(b.isEntry))) {
    const file = path.join(cniDir, chunk.fileName);
    writeFileSync(`${file}.tmp`, chunk.code);
    renameSync(`${file}.tmp`, file);
  }
} finally {
  await bundle.close();
}
