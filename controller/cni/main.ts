import { readFileSync } from 'node:fs';
import { cniMain } from './plugin.js';

// Entry point when run as a CNI plugin (installed as /opt/cni/bin/flannel or .../twill). No
// top-level await: the build bundles this file into a CommonJS script (scripts/bundle-cni.mjs).
const stdin = process.env.CNI_COMMAND === 'VERSION' ? '' : readFileSync(0, 'utf8');
void cniMain(stdin, process.env).then(({ out, code }) => {
  if (out) process.stdout.write(out);
  process.exitCode = code;
});
