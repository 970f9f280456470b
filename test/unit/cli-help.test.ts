import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { agentFlagNames } from '../../controller/agent/flags.js';
import { UsageError, type OptSpec } from '../../controller/cli/args.js';
import { commands, subcommands } from '../../controller/cli/commands.js';
import { runCli } from '../../controller/cli/main.js';
import { globalOpts } from '../../controller/cli/options.js';

/** Runs the real dispatcher and returns what it printed on stdout. */
async function cli(argv: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const spy = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
  try {
    return { code: await runCli(argv), out: lines.join('\n') };
  } finally {
    spy.mockRestore();
  }
}

const spelled = (name: string) => (name.length === 1 ? `-${name}` : `--${name}`);

afterEach(() => vi.restoreAllMocks());

describe('help for every command', () => {
  // Driven by the dispatcher's own list: a command added without help is a command added here.
  describe.each(commands.map((c) => [c.name, c] as const))('twill %s', (name, command) => {
    it.each(['--help', '-h'])('%s exits 0 and names every flag with a description', async (flag) => {
      const { code, out } = await cli([...name.split(' '), flag]);
      expect(code).toBe(0);
      expect(out).toContain(`usage: twill ${name}`);
      for (const [f, spec] of Object.entries<OptSpec>({ ...command.flags, 'log-format': globalOpts['log-format'] })) {
        expect(spec.describe, `${name} ${spelled(f)}`).not.toBe('');
        if (spec.required) expect(out).toMatch(new RegExp(`${spelled(f)}\\b.*\\(required\\)`));
        expect(out).toMatch(new RegExp(`${spelled(f)}\\b.* ${spec.describe.slice(0, 20).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      }
    });
  });

  it("lists every one of the agent's flanneld flags, from the parser's table", async () => {
    const { out } = await cli(['agent', '--help']);
    for (const f of agentFlagNames) expect(out).toContain(spelled(f));
  });

  it.each([['lab'], ['lab', 'pod'], ['dataplane'], ['cni']])('the group %j answers --help with its subcommands', async (...group) => {
    const { code, out } = await cli([...group, '--help']);
    expect(code).toBe(0);
    for (const c of subcommands(group)) expect(out).toContain(`twill ${c.name}`);
  });

  it('twill --help lists every command', async () => {
    const { code, out } = await cli(['--help']);
    expect(code).toBe(0);
    for (const c of commands) expect(out).toContain(`twill ${c.name}`);
  });

  it("--version and version print package.json's version", async () => {
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const v of ['--version', 'version']) expect((await cli([v])).out).toBe(`twill ${version}`);
  });

  it.each([
    [['maps', '--bogus'], /unknown flag --bogus\n\(twill maps --help lists its flags\)/],
    [['docker-opts', '-x'], /unknown flag -x/],
    [['lab', 'bogus'], /twill lab: unknown subcommand bogus; expected up, status, demo, down, pod/],
    [['bogus'], /unknown command bogus/],
    [['maps', '--log-format', 'xml'], /--log-format xml: expected text or json/],
    [['dataplane', 'attach', '--iface', 'eth0'], /missing required flags: --public-ip, --vtep-mac, --subnet, --network/],
    [['lab', 'pod', 'add', '--name', 'nolab'], /missing required flag: --node/],
  ])('%j is a usage error naming the problem', async (argv, message) => {
    await expect(runCli(argv)).rejects.toThrow(UsageError);
    await expect(runCli(argv)).rejects.toThrow(message);
  });
});
