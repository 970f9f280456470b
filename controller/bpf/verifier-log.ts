import koffi from 'koffi';
import { logger } from '../util/log.js';
import { PrintFn, raw } from './libbpf-raw.js';

/*
 * libbpf's own messages (libbpf_set_print), formatted from their va_list, routed to a logger,
 * and captured during a load so a verifier rejection carries its log.
 */

type LogLevel = 'warn' | 'info' | 'debug';
const LEVELS: readonly LogLevel[] = ['warn', 'info', 'debug']; // enum libbpf_print_level

const libbpfLog = logger('libbpf');
const defaultLogger = (level: LogLevel, msg: string) => {
  if (level === 'warn') libbpfLog.warn(msg);
};
let userLogger: (level: LogLevel, msg: string) => void = defaultLogger;

/** Warn-level messages printed during the current bpf_object__load, for its verifier log. */
let capture: string[] | undefined;

/**
 * va_copy is a plain struct copy on x86-64 (24-byte __va_list_tag) and arm64 (32-byte struct),
 * which lets a message longer than the scratch buffer be formatted a second time with an
 * untouched copy. Elsewhere one pass into a large buffer has to do.
 */
const VA_LIST_SIZE = process.arch === 'x64' ? 24 : process.arch === 'arm64' ? 32 : 0;
const scratch = Buffer.alloc(VA_LIST_SIZE ? 4096 : 1 << 20);
const MAX_MESSAGE = 64 << 20;

function formatVa(fmt: unknown, args: unknown): string {
  if (!VA_LIST_SIZE) {
    const n = raw.vsnprintf(scratch, scratch.length, fmt, args) as number;
    return scratch.toString('utf8', 0, Math.max(0, Math.min(n, scratch.length - 1)));
  }
  const saved = Buffer.from(new Uint8Array(koffi.view(args, VA_LIST_SIZE))); // copies
  const n = raw.vsnprintf(scratch, scratch.length, fmt, Buffer.from(saved)) as number;
  if (n < 0) return '';
  if (n < scratch.length) return scratch.toString('utf8', 0, n);
  const big = Buffer.alloc(Math.min(n + 1, MAX_MESSAGE));
  const m = raw.vsnprintf(big, big.length, fmt, saved) as number;
  return big.toString('utf8', 0, Math.max(0, Math.min(m, big.length - 1)));
}

const printCallback = koffi.register(
  (level: number, fmt: unknown, args: unknown): number => {
    try {
      const text = formatVa(fmt, args).replace(/\n$/, '');
      const lvl = LEVELS[level] ?? 'debug';
      if (lvl === 'warn') capture?.push(text);
      userLogger(lvl, text);
    } catch {
      // never throw into C
    }
    return 0;
  },
  koffi.pointer(PrintFn),
);
raw.setPrint(printCallback);

/** Routes libbpf's own messages (libbpf_set_print); by default warnings go to the 'libbpf' logger. */
export function setLibbpfLogger(fn: (level: LogLevel, msg: string) => void): void {
  userLogger = fn;
}

/** The verifier's part of what libbpf printed during a failed load, or all its warnings. */
export function verifierLogOf(lines: readonly string[]): string | undefined {
  const text = lines.join('\n');
  const parts: string[] = [];
  const re = /-- BEGIN PROG LOAD LOG --\n?([\s\S]*?)-- END PROG LOAD LOG --/g;
  for (let m = re.exec(text); m; m = re.exec(text)) parts.push(m[1].replace(/\n$/, ''));
  const log = parts.length ? parts.join('\n') : text;
  return log.trim() ? log : undefined;
}

/** Runs a libbpf call, keeping the warnings it prints: a failed load's verifier log is among them. */
export function withCapturedLog(call: () => number): { rc: number; log?: string } {
  const lines: string[] = [];
  capture = lines;
  let rc: number;
  try {
    rc = call();
  } finally {
    capture = undefined;
  }
  return { rc, log: rc < 0 ? verifierLogOf(lines) : undefined };
}
