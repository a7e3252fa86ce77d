// Line logger for daemons: one line per state change, to stderr and (optionally) the kernel log via /dev/kmsg.
import { openSync, writeSync, closeSync, constants } from "node:fs";
import { cleanLine } from "./printable.ts";

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  debug(msg: string): void;
}

export interface LoggerOptions {
  prefix?: string;   // printed before every line as "prefix: "; default "airroot"
  kmsg?: boolean;    // also write to /dev/kmsg when it exists and is writable; default true
  verbose?: boolean; // emit debug lines; default false
  kmsgPath?: string; // default /dev/kmsg (tests point it at a file)
}

// syslog priorities used by /dev/kmsg ("<N>" prefix).
const PRIO = { error: 3, warn: 4, info: 6, debug: 7 } as const;
// The kernel rejects kmsg records above ~1 KiB; keep well below so a long URL never loses the whole line.
const KMSG_MAX = 900;

export function createLogger(opts: LoggerOptions = {}): Logger {
  const prefix = opts.prefix ?? "airroot";
  const verbose = opts.verbose ?? false;
  let kmsgFd: number | null = null;
  if (opts.kmsg ?? true) {
    // No O_CREAT: when kmsg is absent we must not create a plain file in its place. Absent or read-only: stderr only.
    try { kmsgFd = openSync(opts.kmsgPath ?? "/dev/kmsg", constants.O_WRONLY | constants.O_APPEND); } catch { kmsgFd = null; }
  }
  const emit = (level: keyof typeof PRIO, msg: string) => {
    // Control characters from remote input must not forge extra log lines or act on a terminal (C1, bidi).
    const clean = cleanLine(msg);
    const line = prefix ? `${prefix}: ${clean}` : clean;
    try { process.stderr.write(line + "\n"); } catch { /* stderr closed: nothing better to do */ }
    if (kmsgFd !== null) {
      try { writeSync(kmsgFd, `<${PRIO[level]}>${line.slice(0, KMSG_MAX)}\n`); }
      catch { try { closeSync(kmsgFd); } catch { /* ignore */ } kmsgFd = null; } // stop trying after a failure
    }
  };
  return {
    info: (m) => emit("info", m),
    warn: (m) => emit("warn", m),
    error: (m) => emit("error", m),
    debug: (m) => { if (verbose) emit("debug", m); },
  };
}

/** A logger that records lines in memory (for tests and for callers that want to inspect what was said). */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    info: (m) => { lines.push(m); },
    warn: (m) => { lines.push(m); },
    error: (m) => { lines.push(m); },
    debug: () => {},
  };
}
