import { run } from '../util/exec.js';
import type { Logger } from '../util/log.js';
import { desiredRules, parseIptablesSave, planRestore, type MasqInput } from './rules.js';

/*
 * The iptables edge of --ip-masq and --iptables-forward-rules.
 *
 * Why iptables-restore and not an nftables table of our own: the rules must sit in the same
 * nat POSTROUTING / filter FORWARD that kube-proxy, Docker and operators' own rules use, under
 * the chain names flannel users already look for (FLANNEL-POSTRTG, FLANNEL-FWD), whichever
 * iptables backend (nft or legacy) the node runs; a separate nft table would be invisible to
 * `iptables -t nat -S` and ordered against kube-proxy's chains by hook priority instead.
 * Atomicity still holds: `iptables-restore --noflush` commits each table as one transaction
 * (one nf_tables batch, or one legacy table replace), and a chain declared in it is emptied and
 * refilled within that commit, so no packet ever sees it half-written or empty.
 *
 * Never a gap across restarts: nothing is removed when the agent stops, and on start (and on
 * every resync) the chains are compared with what they should be and rewritten only if they
 * differ, so a restarted agent normally does not touch them at all.
 */

const WAIT_FOR_XTABLES_LOCK = ['-w', '5'];

interface IptablesMasqOptions {
  resyncSeconds: number;
  log: Logger;
  /** 6: the same chains in ip6tables, for the IPv6 network */
  family?: 4 | 6;
}

export class IptablesMasq {
  private input?: MasqInput;
  private timer?: NodeJS.Timeout;
  private running: Promise<void> = Promise.resolve();
  private lastError = '';
  /** restores written (first set-up, lease moves, repairs) and the last failure, for status output */
  writes = 0;
  error?: string;

  constructor(private readonly opts: IptablesMasqOptions) {}

  /** Sets the rule inputs (first lease, or a lease that moved) and syncs at once. */
  async update(input: MasqInput): Promise<void> {
    this.input = input;
    await this.sync('update');
  }

  /**
   * Re-checks every --iptables-resync seconds and repairs whatever someone changed. With no rule
   * wanted (no --ip-masq, no forward rules) there is nothing to guard after the first sync
   * removed any leftovers, so no timer runs.
   */
  startResync(): void {
    if (this.timer || !(this.input?.ipMasq || this.input?.forwardRules)) return;
    this.timer = setInterval(() => void this.sync('resync'), this.opts.resyncSeconds * 1000);
    this.timer.unref();
  }

  /** One check-and-repair pass; passes never overlap. Failures are logged (once per distinct error), not thrown. */
  sync(why: 'update' | 'resync' = 'resync'): Promise<void> {
    this.running = this.running.then(() => this.syncOnce(why));
    return this.running;
  }

  private async syncOnce(why: 'update' | 'resync'): Promise<void> {
    if (!this.input) return;
    try {
      const desired = desiredRules(this.input);
      // One iptables-save of every table: a single process per check is what a node pays every few seconds.
      const saved = parseIptablesSave(await this.iptables(`${this.tool}-save`, []));
      const plan = planRestore(saved, desired);
      if (plan.script) {
        await this.iptables(`${this.tool}-restore`, [...WAIT_FOR_XTABLES_LOCK, '--noflush'], plan.script);
        this.writes++;
        // Expected when rules are first set or the lease moved; on a resync someone changed them.
        if (why === 'update') this.opts.log.info('iptables rules written', { changes: plan.repairs });
        else this.opts.log.warn('iptables rules were changed outside twill: repaired', { repairs: plan.repairs });
      } else this.opts.log.debug('iptables rules in place');
      if (this.lastError) this.opts.log.info('iptables rules in place again');
      this.lastError = '';
      this.error = undefined;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.lastError)
        this.opts.log.error('cannot program iptables rules, retrying at the next resync', { error: message, resyncSeconds: this.opts.resyncSeconds });
      this.lastError = message;
      this.error = message;
    }
  }

  private get tool(): string {
    return this.opts.family === 6 ? 'ip6tables' : 'iptables';
  }

  private async iptables(program: string, args: string[], input?: string): Promise<string> {
    return (await run([program, ...args], { input })).stdout;
  }
}
