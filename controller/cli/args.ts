/** Declarative option parsing for twill's own subcommands: every error names the flag. */
export type OptType = 'string' | 'number' | 'boolean';
export interface OptSpec {
  type: OptType;
  default?: string | number | boolean;
  describe: string;
}
export type OptTable = Record<string, OptSpec>;

export class UsageError extends Error {
  override name = 'UsageError';
}

type Parsed<T extends OptTable> = { [K in keyof T]: T[K]['type'] extends 'number' ? number : T[K]['type'] extends 'boolean' ? boolean : string } & {
  _: string[];
};

export function parseArgs<T extends OptTable>(argv: readonly string[], table: T): Parsed<T> {
  const out: Record<string, unknown> = { _: [] };
  for (const [name, spec] of Object.entries(table)) if (spec.default !== undefined) out[name] = spec.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) {
      (out._ as string[]).push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(2, eq) : arg.slice(2);
    const spec = table[name];
    if (!spec) throw new UsageError(`unknown flag --${name}`);
    let value: string | undefined = eq > 0 ? arg.slice(eq + 1) : undefined;
    if (spec.type === 'boolean') {
      // `--fast-path false` as well as `--fast-path=false`: a separate true/false belongs to the flag.
      if (value === undefined && (argv[i + 1] === 'true' || argv[i + 1] === 'false')) value = argv[++i];
      if (value === undefined) out[name] = true;
      else if (value === 'true' || value === 'false') out[name] = value === 'true';
      else throw new UsageError(`--${name}=${value}: expected true or false`);
      continue;
    }
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
    }
    if (spec.type === 'number') {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`--${name} ${value}: expected a number`);
      out[name] = n;
    } else out[name] = value;
  }
  return out as Parsed<T>;
}

export function requireOpts(opts: Record<string, unknown>, names: readonly string[]): void {
  const missing = names.filter((n) => opts[n] === undefined || opts[n] === '');
  if (missing.length) throw new UsageError(`missing required flag${missing.length > 1 ? 's' : ''}: ${missing.map((n) => `--${n}`).join(', ')}`);
}

export function usage(command: string, table: OptTable): string {
  const rows = Object.entries(table).map(([n, s]) => `  --${n}${s.type === 'boolean' ? '' : ` <${s.type}>`}`.padEnd(30) + s.describe + (s.default !== undefined ? ` (default ${s.default})` : ''));
  return `usage: twill ${command}\n${rows.join('\n')}`;
}
