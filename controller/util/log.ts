/**
 * Logs on stderr, one line per event: readable text by default, JSON for log pipelines
 * (--log-format json or TWILL_LOG_FORMAT=json). Quiet by default (warn and above; the agent
 * raises it to info); TWILL_LOG=info|debug or -v raises the level.
 */
type Level = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'text' | 'json';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

let threshold: Level = (process.env.TWILL_LOG as Level) in order ? (process.env.TWILL_LOG as Level) : 'warn';
let format: LogFormat = process.env.TWILL_LOG_FORMAT === 'json' ? 'json' : 'text';

export function setLogLevel(level: Level): void {
  threshold = level;
}

/** Whether TWILL_LOG chose the level, which then wins over a command's own default. */
export const logLevelFromEnv = (): boolean => (process.env.TWILL_LOG as Level) in order;

export function setLogFormat(f: LogFormat): void {
  format = f;
}

/** Its functions use no `this`: callers pass them around detached (`(bad ? log.error : log.warn)(...)`). */
export interface Logger {
  debug: (msg: string, fields?: Record<string, unknown>) => void;
  info: (msg: string, fields?: Record<string, unknown>) => void;
  warn: (msg: string, fields?: Record<string, unknown>) => void;
  error: (msg: string, fields?: Record<string, unknown>) => void;
  child: (fields: Record<string, unknown>) => Logger;
}

export interface LogRecord {
  ts: string;
  level: Level;
  component: string;
  msg: string;
  [field: string]: unknown;
}

export function logger(component: string, base: Record<string, unknown> = {}): Logger {
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < order[threshold]) return;
    process.stderr.write(formatRecord({ ts: new Date().toISOString(), level, component, msg, ...base, ...fields }, format) + '\n');
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (f) => logger(component, { ...base, ...f }),
  };
}

/**
 * `2026-11-30T15:48:20.123Z INFO  agent lease renewed lease=10.244.1.0/24 expiresInS=86340`:
 * a string is quoted (JSON string escapes) when it could be misread: spaces, quotes, `=`, newlines
 * or nothing at all, so each event stays one line that splits back into its fields.
 */
export function formatRecord(rec: LogRecord, f: LogFormat): string {
  if (f === 'json') return JSON.stringify(rec, errorReplacer);
  const { ts, level, component, msg, ...fields } = rec;
  const context = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${textValue(v)}`);
  return [ts, level.toUpperCase().padEnd(5), component, msg.replace(/\n/g, '\\n'), ...context].join(' ');
}

function textValue(v: unknown): string {
  if (typeof v === 'string' || v instanceof Error) {
    const s = typeof v === 'string' ? v : v.message;
    return s === '' || /[\s"=\\]/.test(s) ? JSON.stringify(s) : s;
  }
  // Objects and arrays stay readable JSON; only whitespace would split them.
  const json = JSON.stringify(v, errorReplacer);
  return /\s/.test(json) ? JSON.stringify(json) : json;
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message };
  return value;
}
