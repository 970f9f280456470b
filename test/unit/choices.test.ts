import { describe, expect, it } from 'vitest';
import { parseAgentFlags } from '../../controller/agent/flags.js';
import { BACKENDS, choiceList, DATAPLANES, DECAP_HOOKS } from '../../controller/config/choices.js';
import { dataplaneSpecSchema } from '../../controller/dataplane/spec.js';
import { labOptionsSchema } from '../../controller/lab/options.js';

describe('the choices the front ends share', () => {
  it('are written as the flag errors quote them', () => {
    expect(choiceList(DATAPLANES)).toBe('bpf, kernel or auto');
    expect(choiceList(DECAP_HOOKS)).toBe('auto, xdp or tc');
    expect(choiceList(BACKENDS)).toBe('vxlan or host-gw');
    expect(choiceList(['one'])).toBe('one');
  });

  it('are the same lists in the agent flags, the lab options and the dataplane spec', () => {
    for (const hook of DECAP_HOOKS) expect(parseAgentFlags([`--decap-hook=${hook}`]).decapHook).toBe(hook);
    for (const dataplane of DATAPLANES) expect(parseAgentFlags([`--dataplane=${dataplane}`]).dataplane).toBe(dataplane);
    expect(labOptionsSchema.shape.decapHook.options).toEqual([...DECAP_HOOKS]);
    expect(labOptionsSchema.shape.backend.options).toEqual([...BACKENDS]);
    const spec = { pinDir: '/sys/fs/bpf/t', underlayIface: 'eth0', vtepMac: '0a:58:0a:f4:01:01' };
    for (const decapHook of DECAP_HOOKS) expect(dataplaneSpecSchema.parse({ ...spec, decapHook }).decapHook).toBe(decapHook);
    for (const backend of BACKENDS) expect(dataplaneSpecSchema.parse({ ...spec, backend }).backend).toBe(backend);
    expect(dataplaneSpecSchema.safeParse({ ...spec, decapHook: 'generic' }).success).toBe(false);
  });
});
