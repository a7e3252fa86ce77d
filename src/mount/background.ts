// `airroot mount` without --foreground behaves like mount(8): it returns once the filesystem is ready and a
// detached daemon keeps serving it. The daemon reports readiness with one line on a private pipe, and writes its
// log to a file beside its status socket (never to the caller's stderr: a daemon holding the caller's pipe open
// would make `$(airroot mount ...)` or any captured call hang). Until ready, the parent echoes that log.
// What is started is the holder (holder.ts), which holds the FUSE connection and starts the daemon as its child.
import { spawn } from "node:child_process";
import { openSync, closeSync, readSync } from "node:fs";
import { selfCommand } from "../util/self";
import { statusLogPath } from "./status";
import { holderArgv0, LINE } from "./holder";

export const READY_LINE = LINE.ready;

/** Starts the holder and, through it, the daemon; resolves with the daemon's and the holder's pids once mounted. */
export async function startDetachedDaemon(mountArgs: string[], mountpoint: string, argv0?: string): Promise<number> {
  return (await startHeldMount(mountArgs, mountpoint, argv0)).daemonPid;
}

export async function startHeldMount(mountArgs: string[], mountpoint: string, argv0?: string): Promise<{ daemonPid: number; holderPid: number }> {
  const [exe, ...pre] = selfCommand();
  const logPath = statusLogPath(mountpoint);
  const logFd = openSync(logPath, "w", 0o600);
  const child = spawn(exe, [...pre, "mount", "--holder", ...mountArgs], {
    argv0: holderArgv0(argv0), detached: true, stdio: ["ignore", "pipe", logFd], env: daemonEnv(mountArgs),
  });
  closeSync(logFd);
  const echo = tailTo(logPath, (text) => process.stderr.write(text));
  try {
    return await new Promise<{ daemonPid: number; holderPid: number }>((resolve, reject) => {
      let seen = "";
      child.stdout!.on("data", (chunk: Buffer) => {
        seen += chunk.toString();
        const m = new RegExp(`${READY_LINE} (\\d+)\n`).exec(seen);
        if (m) {
          child.stdout!.destroy();
          child.unref();
          resolve({ daemonPid: Number(m[1]), holderPid: child.pid! });
        }
      });
      child.once("exit", (code, signal) =>
        reject(new Error(`the mount daemon exited before the mount was ready (${signal ?? `exit code ${code}`}); see the messages above`)));
      child.once("error", (e) => reject(new Error(`cannot start the mount daemon: ${e.message}`)));
    });
  } finally {
    echo.stop();
  }
}

/**
 * The daemon's environment: the caller's, plus JIT and GC settings for a long-lived data-path daemon (the caller's own
 * values win). Measured on the compiled daemon with the fetch thread, 1 GiB cold sequential read from two nginx on
 * loopback, default 8 MiB cache, 3 alternating runs each:
 * - BUN_JSC_forceRAMSize: JSC sizes its heap and decides it is under memory pressure (a footprint above 80% of
 *   "RAM") from the machine's RAM; telling it a daemon-sized RAM makes it collect before the TLS chunks pile up.
 *   Scaled with --cache-mb so a large cache does not leave JSC permanently "over" that threshold. (With undici on the
 *   data path: peak VmRSS 187 -> 159 MiB together with the mimalloc setting below.)
 * - BUN_JSC_useFTLJIT=0: the hot paths are native (TLS, copies); JSC's top tier only spent CPU compiling during a
 *   read (JIT threads 0.08-0.09 -> 0.04-0.05 CPU s/GiB).
 * - BUN_JSC_useDFGJIT=0 (the tier below FTL): same MB/s and 4 KiB IOPS within noise, 5-7 MiB less RSS (its compiler's
 *   code is never paged in, nor its output kept): make bench, 2 alternating runs, 1010/890 vs 941/955 MB/s at 0 ms,
 *   724/693 vs 627/695 at 2 ms, peak 86-87 vs 91-93 MiB. (The JIT cannot go entirely: bun:ffi needs it.)
 * - Not MIMALLOC_PURGE_DELAY=0 (tried): returning freed pages to the kernel at once makes every fresh socket chunk
 *   fault its pages in again: fetch thread 0.40 -> 0.63-0.71 CPU s/GiB, 761-803 vs 865-911 MB/s (with FTL off),
 *   for a peak of ~117 instead of ~138-151 MiB.
 */
export function daemonEnv(mountArgs: string[], base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  let cacheMb = 8;
  for (let i = 0; i < mountArgs.length; i++) {
    const a = mountArgs[i];
    const v = a === "--cache-mb" ? mountArgs[i + 1] : a.startsWith("--cache-mb=") ? a.slice(11) : undefined;
    if (v !== undefined && Number.isFinite(Number(v)) && Number(v) > 0) cacheMb = Number(v);
  }
  return { BUN_JSC_forceRAMSize: String((256 + 2 * cacheMb) * 1048576), BUN_JSC_useFTLJIT: "0",
    BUN_JSC_useDFGJIT: "0", ...base };
}

/** Echo what is appended to a file until stopped (then one last read, so no line is lost). */
function tailTo(path: string, write: (text: string) => void): { stop(): void } {
  const fd = openSync(path, "r");
  let offset = 0;
  const buf = Buffer.alloc(65536);
  const drain = () => {
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, offset);
      if (n <= 0) return;
      offset += n;
      write(buf.subarray(0, n).toString());
    }
  };
  const timer = setInterval(drain, 50);
  return { stop() { clearInterval(timer); drain(); closeSync(fd); } };
}
