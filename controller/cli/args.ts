import { UsageError } from '../util/usage-error.js';
/** Declarative option parsing for twill's own subcommands: every error names the flag. */
type OptType = 'string' | 'number' | 'boolean';
export interface OptSpec {
  type: OptType;
  default?: string | number | boolean;
  describe: string;
  /** a one-letter alias, -x, for commands that stand in for a getopts script */
  short?: string;
  /** the command refuses to run without it; help says so */
  required?: boolean;
}
export type OptTable = Record<string, OptSpec>;

export { UsageError } from '../util/usage-error.js';

type Parsed<T extends OptTable> = { [K in keyof T]: T[K]['type'] extends 'number' ? number : T[K]['type'] extends 'boolean' ? boolean : string } & {
  _: string[];
};

export function parseArgs<T extends OptTable>(argv: readonly string[], table: T): Parsed<T> {
  const out: Record<string, unknown> = { _: [] };
  for (const [name, spec] of Object.entries(table)) if (spec.default !== undefined) out[name] = spec.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (/^-[A-Za-z]/.test(arg)) {
      i = parseShort(argv, i, table, out);
      continue;
    }
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
    assign(out, name, spec, value, `--${name}`);
  }
  return out as Parsed<T>;
}

function assign(out: Record<string, unknown>, name: string, spec: OptSpec, value: string, label: string): void {
  if (spec.type === 'number') {
    const n = Number(value);
    if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${label} ${value}: expected a number`);
    out[name] = n;
  } else out[name] = value;
}

/**
 * getopts' rules, as the scripts twill replaces were called: booleans cluster (-ic), a string
 * option takes the rest of its word or the next one (-d/run/x or -d /run/x). Returns the index
 * of the last word used.
 */
function parseShort(argv: readonly string[], i: number, table: OptTable, out: Record<string, unknown>): number {
  const word = argv[i];
  for (let j = 1; j < word.length; j++) {
    const entry = Object.entries(table).find(([, s]) => s.short === word[j]);
    if (!entry) throw new UsageError(`unknown flag -${word[j]}`);
    const [name, spec] = entry;
    if (spec.type === 'boolean') {
      out[name] = true;
      continue;
    }
    let value = word.slice(j + 1);
    if (value === '') {
      if (argv[i + 1] === undefined) throw new UsageError(`-${word[j]} needs a value`);
      value = argv[++i];
    }
    assign(out, name, spec, value, `-${word[j]}`);
    return i;
  }
  return i;
}

export function requireOpts(opts: Record<string, unknown>, table: OptTable): void {
  const missing = Object.keys(table).filter((n) => table[n].required && (opts[n] === undefined || opts[n] === ''));
  if (missing.length) throw new UsageError(`missing required flag${missing.length > 1 ? 's' : ''}: ${missing.map((n) => `--${n}`).join(', ')}`);
}
