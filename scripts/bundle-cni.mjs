#!/usr/bin/env node
// Bundles the CNI plugin (dist/controller/cni/main.js, from tsc) into one CommonJS file,
// dist/controller/cni/twill-cni.cjs, which `twill cni install` points the plugin at. The
// container runtime starts a process per pod ADD and DEL; one pre-linked script spares each of
// them the ES module loader resolving and linking a hundred files (zod's alone are 95), which
// cost more than Node's own start-up (docs/cni.md). What the DEL's import() reaches (libbpf)
// becomes a second file, twill-cni-forget.cjs, required only by a DEL that edits a map. koffi
// stays external: it finds its native addon relative to its own package.
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
