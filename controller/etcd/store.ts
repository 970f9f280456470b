import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Etcd3, EtcdLeaseInvalidError, isRecoverableError, type IOptions, type Lease as EtcdLease } from 'etcd3';
import { LeaseGoneError, type HeldLease, type LeaseRecord, type LeaseStore, type WatchEvent, type WatchHandle } from '../subnet/lease-store.js';
import { logger } from '../util/log.js';
import { EtcdOutage, isUnreachable } from './outage.js';

const log = logger('etcd');
/** Between keepalive attempts that failed at once: each picks a member anew, so a stopped one is soon missed. */
const KEEPALIVE_RETRY_MS = 25;

/*
 * The etcd edge. etcd3 (npm) is in maintenance mode, so the rest of twill sees only this
 * class: flannel's config key, and its lease records as a LeaseStore (keys under one prefix,
 * read at a revision, created by transaction, kept alive, watched from a revision).
 */

interface EtcdOptions {
  endpoints: string[];
  prefix: string;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  username?: string;
  password?: string;
  /** deadline for each unary call, ms */
  timeoutMs?: number;
}

class EtcdConfigError extends Error {
  override name = 'EtcdConfigError';
}

/**
 * Reads and parses a credential up front: the gRPC layer would only fail on the first call, and
 * a bad file would then look like an unreachable etcd, retried forever.
 */
function readCredential(flag: string, file: string | undefined, kind: 'certificate' | 'private key'): Buffer | undefined {
  if (!file) return undefined;
  let pem: Buffer;
  try {
    pem = readFileSync(file);
  } catch (err) {
    throw new EtcdConfigError(`${flag} ${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    if (kind === 'certificate') new X509Certificate(pem);
    else createPrivateKey(pem);
  } catch (err) {
    throw new EtcdConfigError(`${flag} ${file}: not a PEM ${kind} (${(err as Error).message})`);
  }
  return pem;
}

export class EtcdStore implements LeaseStore {
  private readonly client: Etcd3;
  readonly subnetsPrefix: string;
  private readonly outage: EtcdOutage;

  constructor(readonly opts: EtcdOptions) {
    const ca = readCredential('--etcd-cafile', opts.caFile, 'certificate');
    const cert = readCredential('--etcd-certfile', opts.certFile, 'certificate');
    const key = readCredential('--etcd-keyfile', opts.keyFile, 'private key');
    const tls = opts.endpoints.some((e) => e.startsWith('https://'));
    const timeout = opts.timeoutMs ?? 5000;
    const options: IOptions = {
      hosts: opts.endpoints,
      // A deadline on every unary call: an unreachable etcd must fail a call, not hang it.
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeout }),
    };
    if (tls || ca || cert) options.credentials = { rootCertificate: ca ?? Buffer.alloc(0), privateKey: key, certChain: cert };
    if (opts.username) options.auth = { username: opts.username, password: opts.password ?? '' };
    this.client = new Etcd3(options);
    this.subnetsPrefix = `${opts.prefix.replace(/\/$/, '')}/subnets/`;
    this.outage = new EtcdOutage(opts.endpoints);
  }

  /** Every call's outcome feeds one report of an outage, instead of each caller logging the client's errors. */
  private async track<T>(p: Promise<T>): Promise<T> {
    try {
      const v = await p;
      this.reachable();
      return v;
    } catch (err) {
      if (isUnreachable(err)) this.say(this.outage.failed(err as Error, Date.now()));
      else this.reachable(); // etcd answered, if with an error
      throw err;
    }
  }

  private reachable(): void {
    this.say(this.outage.succeeded(Date.now()));
  }

  private say(line: ReturnType<EtcdOutage['succeeded']>): void {
    if (line) log[line.level](line.msg, line.fields);
  }

  /** A failed call in words for a status field: stable while an outage lasts, however the client words it. */
  describeError(err: unknown): string {
    return isUnreachable(err) ? `etcd unreachable at ${this.opts.endpoints.join(',')}` : `etcd: ${(err as Error).message}`;
  }

  get configKey(): string {
    return `${this.opts.prefix.replace(/\/$/, '')}/config`;
  }

  async getConfig(): Promise<string | undefined> {
    return (await this.track(this.client.get(this.configKey).string())) ?? undefined;
  }

  async putConfig(text: string): Promise<void> {
    await this.client.put(this.configKey).value(text);
  }

  isUnreachable(err: unknown): boolean {
    return isUnreachable(err);
  }

  async listLeases(): Promise<{ revision: string; records: LeaseRecord[] }> {
    const res = await this.track(this.client.getAll().prefix(this.subnetsPrefix).exec());
    return {
      revision: res.header.revision,
      records: res.kvs.map((kv) => ({
        key: kv.key.toString(),
        value: kv.value.toString(),
        lease: kv.lease || '0',
        modRevision: kv.mod_revision,
        createRevision: kv.create_revision,
      })),
    };
  }

  async createLease(subnetKey: string, value: string, ttlSeconds: number): Promise<HeldLease | undefined> {
    const key = this.subnetsPrefix + subnetKey;
    const lease = this.client.lease(ttlSeconds, { autoKeepAlive: false });
    const id = await this.track(lease.grant());
    const res = await this.client.if(key, 'Version', '==', 0).then(this.client.put(key).value(value).lease(id)).commit();
    if (!res.succeeded) {
      await lease.revoke().catch(() => undefined);
      return undefined;
    }
    return this.held(lease, id);
  }

  async rewriteLease(subnetKey: string, value: string, modRevision: string, ttlSeconds: number | undefined): Promise<HeldLease | null | undefined> {
    const key = this.subnetsPrefix + subnetKey;
    const lease = ttlSeconds === undefined ? null : this.client.lease(ttlSeconds, { autoKeepAlive: false });
    const put = this.client.put(key).value(value);
    const id = lease && (await this.track(lease.grant()));
    if (id) put.lease(id);
    const res = await this.client.if(key, 'Mod', '==', modRevision).then(put).commit();
    if (!res.succeeded) {
      await lease?.revoke().catch(() => undefined);
      return undefined;
    }
    return lease && id ? this.held(lease, id) : null;
  }

  private held(lease: EtcdLease, id: string): HeldLease {
    return {
      id,
      keepalive: () => this.keepalive(lease),
      revoke: () => lease.revoke().catch(() => undefined),
    };
  }

  /**
   * Refreshes the TTL; throws LeaseGoneError when etcd says the lease is gone, anything else when
   * etcd could not be asked. etcd3 sends a keepalive on a stream to one member picked at random
   * and, unlike a unary call, never tries another when that one is down, nor learns to avoid it
   * (opening the stream counts as a success). Such an attempt fails at once (connection refused),
   * so it is made again, until the deadline: left to the renewal loop's retry instead, a few
   * unlucky picks of a stopped member let a short lease expire while the rest of the cluster was
   * up (the 3-member etcd test saw it).
   */
  private async keepalive(lease: EtcdLease): Promise<number> {
    const timeoutMs = this.opts.timeoutMs ?? 5000;
    const deadline = Date.now() + timeoutMs;
    const attempts = async (): Promise<number> => {
      for (;;) {
        try {
          return Number((await withTimeout(lease.keepaliveOnce(), Math.max(1, deadline - Date.now()), 'etcd lease keepalive', timeoutMs)).TTL);
        } catch (err) {
          if (!(err instanceof Error && isRecoverableError(err)) || Date.now() + KEEPALIVE_RETRY_MS >= deadline) throw err;
          await new Promise((r) => setTimeout(r, KEEPALIVE_RETRY_MS));
        }
      }
    };
    try {
      return await this.track(attempts());
    } catch (err) {
      // etcd3's error classes leave `name` as "Error": only instanceof tells them apart.
      if (err instanceof EtcdLeaseInvalidError) throw new LeaseGoneError(err.message);
      throw err;
    }
  }

  async revokeLeaseId(id: string): Promise<void> {
    if (id === '0') return;
    await this.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined);
  }

  async deleteLease(subnetKey: string, modRevision?: string): Promise<boolean> {
    const key = this.subnetsPrefix + subnetKey;
    if (modRevision === undefined) return (await this.client.delete().key(key).exec()).deleted !== '0';
    const res = await this.client.if(key, 'Mod', '==', modRevision).then(this.client.delete().key(key)).commit();
    return res.succeeded;
  }

  async putRaw(key: string, value: string): Promise<void> {
    await this.client.put(key).value(value);
  }

  /**
   * etcd3 resubscribes by itself after a lost connection, but not from the last revision it
   * delivered (seen here: a delete made while disconnected never arrived): hence `onReconnect`.
   */
  async watchLeases(fromRevision: string, onEvent: (e: WatchEvent) => void, onReconnect?: () => void): Promise<WatchHandle> {
    const watcher = await this.track(this.client.watch().prefix(this.subnetsPrefix).withPreviousKV().startRevision(fromRevision).create());
    let lostConnection = false;
    watcher.on('disconnected', () => (lostConnection = true));
    watcher.on('connected', () => {
      this.reachable();
      if (!lostConnection) return;
      lostConnection = false;
      onReconnect?.();
    });
    const ended = new Promise<Error>((resolve) => {
      // etcd 3.4 cancels a watch whose start revision was compacted with an empty reason, and
      // the client drops the compact revision: all the caller can do is resync, and it does.
      watcher.on('error', (err) =>
        resolve(
          /Watcher canceled/.test(err.message)
            ? new Error(`etcd canceled the watch from revision ${fromRevision} (compacted away, or rejected): ${err.message}`)
            : err,
        ),
      );
      watcher.on('end', () => resolve(new Error('watch ended')));
    });
    const record = (kv: { key: Buffer; value: Buffer; lease: string; mod_revision: string; create_revision: string }): LeaseRecord => ({
      key: kv.key.toString(),
      value: kv.value.toString(),
      lease: kv.lease || '0',
      modRevision: kv.mod_revision,
      createRevision: kv.create_revision,
    });
    watcher.on('put', (kv) => onEvent({ type: 'put', record: record(kv), revision: kv.mod_revision }));
    watcher.on('delete', (kv, prev) => onEvent({ type: 'delete', record: record(prev ?? kv), revision: kv.mod_revision }));
    return { ended, cancel: () => watcher.cancel() };
  }

  close(): void {
    this.client.close();
  }
}

/** `p`, or an error after `ms`; the error names `budgetMs`, the whole wait of which `ms` is what is left. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string, budgetMs = ms): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: no answer within ${budgetMs} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
