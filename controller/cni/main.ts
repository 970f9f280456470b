import { readFileSync } from 'node:fs';
import { cniMain } from './plugin.js';

// Entry point when run as a CNI plugin (installed as /opt/cni/bin/flannel or .../twill).
const stdin = process.env.CNI_COMMAND === 'VERSION' ? '' : readFileSync(0, 'utf8');
const { out, code } = await cniMain(stdin, process.env);
if (out) process.stdout.write(out);
process.exitCode = code;
