import { describe, expect, it } from 'vitest';
import { formatRecord, type LogRecord } from '../../controller/util/log.js';
import { takeGlobalFlags } from '../../controller/util/global-flags.js';

const bare: LogRecord = { ts: '2026-11-30T15:48:20.123Z', level: 'info', component: 'agent', msg: 'lease renewed' };
const rec: LogRecord = { ...bare, lease: '10.244.1.0/24', expiresInS: 86340 };

describe('log lines', () => {
  it('text by default: time, level, component, message, then key=value', () => {
    expect(formatRecord(rec, 'text')).toBe('2026-11-30T15:48:20.123Z INFO  agent lease renewed lease=10.244.1.0/24 expiresInS=86340');
  });

  it('quotes a value with spaces, quotes, = or nothing, and keeps a stack on one line', () => {
    const line = formatRecord(
      { ...bare, level: 'warn', msg: 'x', error: 'connect ECONNREFUSED 10.0.0.1:2379', empty: '', eq: 'a=b', stack: 'Error: x\n    at y', skipped: undefined },
      'text',
    );
    expect(line).toBe('2026-11-30T15:48:20.123Z WARN  agent x error="connect ECONNREFUSED 10.0.0.1:2379" empty="" eq="a=b" stack="Error: x\\n    at y"');
    expect(line.split('\n')).toHaveLength(1);
  });

  it('objects and arrays as compact JSON, errors as their message', () => {
    expect(formatRecord({ ...bare, msg: 'm', swapped: { encap: true }, peers: ['a', 'b'], err: new Error('boom') }, 'text')).toBe(
      '2026-11-30T15:48:20.123Z INFO  agent m swapped={"encap":true} peers=["a","b"] err=boom',
    );
  });

  it('json for pipelines: one object per line, as the lab and the tests read it', () => {
    expect(JSON.parse(formatRecord(rec, 'json'))).toEqual(rec);
    expect(formatRecord(rec, 'json')).toContain('"msg":"lease renewed","lease":"10.244.1.0/24"');
  });

  it('--log-format is taken off any command line in every spelling; the agent keeps its -v', () => {
    expect(takeGlobalFlags(['maps', '--log-format', 'json', '-v'])).toEqual({ argv: ['maps'], logFormat: 'json', verbose: true });
    expect(takeGlobalFlags(['agent', '-log-format=json', '-v', '--iface=eth0'])).toEqual({
      argv: ['agent', '-v', '--iface=eth0'],
      logFormat: 'json',
      verbose: false,
    });
    expect(() => takeGlobalFlags(['agent', '--log-format'])).toThrow(/--log-format \(none\): expected text or json/);
  });
});
