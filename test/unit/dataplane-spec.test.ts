import { describe, expect, it } from 'vitest';
import { parseDataplaneSpec } from '../../controller/dataplane/spec.js';

const good = {
  pinDir: '/sys/fs/bpf/twill',
  underlayIface: 'eth0',
  publicIp: '192.168.1.2',
  vtepMac: '0a:58:0a:f4:01:01',
  subnet: '10.244.1.0/24',
  network: '10.244.0.0/16',
};

describe('the datapath spec', () => {
  it('takes addresses the way the rest of twill reads them', () => {
    expect(parseDataplaneSpec(good)).toMatchObject({ publicIp: '192.168.1.2', subnet: '10.244.1.0/24' });
  });

  it('refuses an octet out of range or a prefix past /32, naming the field', () => {
    for (const [field, value] of [
      ['subnet', '999.1.1.0/24'],
      ['network', '10.244.0.0/33'],
      ['publicIp', '192.168.1.256'],
      ['network', '10.244.0/16'],
    ] as const)
      expect(() => parseDataplaneSpec({ ...good, [field]: value }), `${field} ${value}`).toThrow(field);
  });
});
