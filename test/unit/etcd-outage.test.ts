import { GRPCUnavailableError } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { EtcdOutage, isUnreachable } from '../../controller/etcd/outage.js';

const endpoints = ['http://10.0.0.1:2379', 'http://10.0.0.2:2379'];
const breaker = new Error('Execution prevented because the circuit breaker is open');
const refused = new Error('14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 10.0.0.1:2379');
const t0 = Date.parse('2026-11-30T16:00:00Z');
const still = (forS: number) => ({
  level: 'warn',
  msg: 'etcd still unreachable',
  fields: { endpoints: endpoints.join(','), since: '2026-11-30T16:00:00.000Z', forS, cause: refused.message },
});

describe('an unreachable etcd, told once', () => {
  it('tells connection failures from answers', () => {
    for (const e of [breaker, refused, new GRPCUnavailableError('x'), new Error('etcd lease keepalive: no answer within 5000 ms')])
      expect(isUnreachable(e), e.message).toBe(true);
    for (const e of [new Error('etcdserver: requested lease not found'), new Error('permission denied'), 'a string']) expect(isUnreachable(e)).toBe(false);
  });

  it('one line when it starts naming the endpoints and the cause, then at most one per 30 s, then one when it recovers', () => {
    const o = new EtcdOutage(endpoints);
    // A failure a second for 95 s, alternating between the cause and the breaker, as the client words it.
    const said = Array.from({ length: 95 }, (_, s) => o.failed(s % 2 ? breaker : refused, t0 + s * 1000)).filter((l) => l !== undefined);
    expect(said).toEqual([{ ...still(0), msg: 'etcd unreachable' }, still(30), still(60), still(90)]);
    expect(o.succeeded(t0 + 100_000)).toEqual({ level: 'info', msg: 'etcd reachable again', fields: { endpoints: endpoints.join(','), downForS: 100 } });
    expect(o.succeeded(t0 + 101_000)).toBeUndefined();
    expect(o.down).toBe(false);
  });

  it('says nothing while etcd answers, and starts afresh after a recovery', () => {
    const o = new EtcdOutage(endpoints, 30_000);
    expect(o.succeeded(t0)).toBeUndefined();
    o.failed(refused, t0);
    o.succeeded(t0 + 5000);
    expect(o.failed(breaker, t0 + 6000)).toMatchObject({
      msg: 'etcd unreachable',
      fields: { since: '2026-11-30T16:00:06.000Z', forS: 0, cause: breaker.message },
    });
  });
});
