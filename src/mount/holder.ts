// The holder: a second, minimal process that keeps a mount's FUSE connection alive while its daemon dies or is
// replaced. It only holds the /dev/fuse fd, starts daemons (restarting a dead one, with a backoff) and hands the
// connection from one daemon to the next; it reads no request and knows nothing of HTTP.
//
// How the fd travels: the holder opens /dev/fuse itself and every daemon is its child, started with that fd as its
// fd 3. Bun.spawn / child_process.spawn pass an fd at spawn time (stdio entries that are numbers): that is the one
// built-in way Bun has (its node:net cannot send SCM_RIGHTS), and the only one needed here, since the holder starts
// every daemon, the new binary of a takeover included. The daemon's copy is the same open file as the holder's, so
// when the daemon dies the kernel does not release the connection, and the requests it had read stay queued on that
// file until the next daemon sends FUSE_NOTIFY_RESEND (src/fuse/protocol.ts).
//
// Holder <-> daemon: the daemon prints lines on its stdout (READY <state json>, STANDBY, DRAINED, STOPPED) and reads
// lines on its stdin (GO [RESEND], DRAIN). What a new daemon needs to carry on without INIT (the mount's settings as
// the same arguments, the negotiated INIT, the file tree, the image's validator) comes from the previous daemon's
// READY line and is handed to the next one in AIRROOT_MOUNT_HELD.
import { spawn, type ChildProcess } from "node:child_process";
import { openSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import type { InitParams } from "../fuse/session";
import { INIT_FLAGS2_HAS_RESEND } from "../fuse/protocol";
import { dropExecutableCode } from "../sys/codepages";

export const HELD_ENV = "AIRROOT_MOUNT_HELD";
/** Test switch: behave as on a kernel without FUSE_NOTIFY_RESEND (before Linux 6.9). */
export const NO_RESEND_ENV = "AIRROOT_FUSE_NO_RESEND";
export const LINE = { ready: "AIRROOT-MOUNT-READY", standby: "AIRROOT-MOUNT-STANDBY", drained: "AIRROOT-MOUNT-DRAINED",
  stopped: "AIRROOT-MOUNT-STOPPED" } as const;

/** What one daemon tells the holder once it serves, for the next one. */
export interface ResumeState {
  init: InitParams;
  dev: string;
  files: { name: string; size: number; mtimeMs: number }[];
  validator: string;
}

/** The holder as its daemons (and `airroot status`) see it. */
export interface HolderInfo {
  pid: number;
  argv0: string;
  startedAt: string;
  restarts: number;
  takeovers: number;
  /** "supported", "not supported by this kernel (Linux < 6.9)", "forced off", or "unknown" before the first INIT. */
  resend: string;
  /** `said`: the dead daemon's last line on stderr (why a daemon that cannot start fails, e.g. a missing file). */
  lastExit?: { at: string; how: string; recovered: boolean; said?: string };
}

/** AIRROOT_MOUNT_HELD: what the holder hands a daemon it starts. */
export interface HeldContext {
  holder: HolderInfo;
  /** Absent for the first daemon, which mounts. */
  state?: ResumeState;
  /** Prepare (probe the servers) but read nothing until GO: the daemon it replaces is still draining. */
  standby?: boolean;
  /** Send FUSE_NOTIFY_RESEND before reading (after a crash, when the kernel has it). */
  resend?: boolean;
  /** oom_score_adj to go back to: the holder's -1000 is inherited and is meant for the holder only. */
  oomScoreAdj?: number;
}

export interface HolderOptions {
  /** argv prefix that starts airroot (selfCommand()); "mount --foreground --held ARGS" is appended. */
  exe: string[];
  mountArgs: string[];
  daemonArgv0?: string;
  control: string;          // the control socket (takeover), beside the status socket
  log: (line: string) => void;
  /** Called once, when the first daemon serves. */
  onReady: (daemonPid: number) => void;
}

/** What `airroot status` says of FUSE_NOTIFY_RESEND for a connection with this INIT. */
export function resendLabel(init: InitParams, forcedOff = process.env[NO_RESEND_ENV] === "1"): string {
  if (forcedOff) return "forced off";
  return (init.kernelFlags2 & INIT_FLAGS2_HAS_RESEND) !== 0 ? "supported" : "not supported by this kernel (Linux < 6.9)";
}

/** Restart delay after `n` consecutive daemons that died before serving for HEALTHY_MS: 0, 0.25, 0.5, ... 30 s. */
export function restartDelayMs(n: number): number {
  return n <= 0 ? 0 : Math.min(30_000, 250 * 2 ** (n - 1));
}
/**
 * A daemon that served this long before dying was healthy: the next one starts at once. One that dies sooner (at
 * start, or on the first request it is handed again) counts towards the backoff, so a crash loop is never hot.
 */
const HEALTHY_MS = 250;
const STANDBY_TIMEOUT_MS = 120_000, DRAIN_TIMEOUT_MS = 60_000;

interface Daemon {
  proc: ChildProcess;
  readyAt?: number;
  standby: boolean;
  drained: boolean;
  stopped: boolean;
  /** Asked to drain for a takeover: its exit is the takeover's business, not a crash. */
  retiring?: boolean;
  /** When the daemon it replaces died (for the log: how long readers waited). */
  startedAfterCrashAt?: number;
  onLine?: (line: string) => void;
  /** Its last non-empty stderr line (bounded), kept for `airroot status` after it dies. */
  lastErr?: string;
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `killed by ${signal}` : `exit code ${code}`;
}

/** Runs the holder until the mount ends; resolves with the exit code. */
export function runHolder(o: HolderOptions): Promise<number> {
  const log = o.log;
  let fuseFd: number;
  try { fuseFd = openSync("/dev/fuse", "r+"); } catch (e) {
    log(`cannot open /dev/fuse (${(e as { code?: string }).code ?? (e as Error).message}); load the fuse module (modprobe fuse) and run as root`);
    return Promise.resolve(1);
  }
  const oomScoreAdj = spareFromOom(log);
  const forcedOff = process.env[NO_RESEND_ENV] === "1";
  const info: HolderInfo = { pid: process.pid, argv0: holderArgv0(o.daemonArgv0), startedAt: new Date().toISOString(),
    restarts: 0, takeovers: 0, resend: "unknown" };
  let exe = o.exe;
  let state: ResumeState | undefined;
  let current: Daemon | undefined;
  let quickFailures = 0;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let takeover: Promise<unknown> | undefined;
  let finish!: (code: number) => void;
  const done = new Promise<number>((r) => (finish = r));
  let finished = false;
  const end = (code: number) => {
    if (finished) return;
    finished = true;
    clearTimeout(restartTimer);
    server?.stop(true);
    rmSync(o.control, { force: true });
    finish(code);
  };

  const resendUsable = () => !forcedOff && !!state && (state.init.kernelFlags2 & INIT_FLAGS2_HAS_RESEND) !== 0;
  const start = (opts: { standby?: boolean; resend?: boolean; exe?: string[] }): Daemon => {
    const ctx: HeldContext = { holder: { ...info }, state, standby: opts.standby, resend: opts.resend, oomScoreAdj };
    const argv = [...(opts.exe ?? exe), "mount", "--foreground", "--held", ...o.mountArgs];
    const proc = spawn(argv[0]!, argv.slice(1), {
      argv0: o.daemonArgv0 ?? argv[0], stdio: ["pipe", "pipe", "pipe", fuseFd],
      env: { ...process.env, [HELD_ENV]: JSON.stringify(ctx) },
    });
    const d: Daemon = { proc, standby: !!opts.standby, drained: false, stopped: false };
    let buf = "";
    proc.stdout!.on("data", (chunk: Buffer) => {
      buf += chunk.toString();
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        onDaemonLine(d, line);
      }
    });
    // stderr passes through to the holder's own; the last line stays for `airroot status` once the daemon is gone.
    proc.stderr!.on("data", (chunk: Buffer) => {
      try { process.stderr.write(chunk); } catch { /* no stderr left */ }
      const last = chunk.toString().split("\n").map((l) => l.trim()).filter(Boolean).pop();
      if (last) d.lastErr = last.slice(0, 300);
    });
    proc.stdin!.on("error", () => {}); // a dead daemon's stdin: EPIPE is expected
    // A binary that cannot be started gives "error" and maybe no "exit": either one counts, once.
    let exited = false;
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => { if (!exited) { exited = true; onDaemonExit(d, code, signal); } };
    proc.once("error", (e) => { log(`cannot start a mount daemon (${argv[0]}): ${e.message}`); onExit(127, null); });
    proc.once("exit", onExit);
    return d;
  };

  const onDaemonLine = (d: Daemon, line: string) => {
    if (line.startsWith(LINE.ready + " ")) {
      try { state = JSON.parse(line.slice(LINE.ready.length + 1)) as ResumeState; } catch {
        log(`daemon pid ${d.proc.pid} sent an unreadable state line; ignoring it`);
        return;
      }
      const first = d.readyAt === undefined && info.resend === "unknown";
      d.readyAt = Date.now();
      if (d.startedAfterCrashAt !== undefined)
        log(`daemon pid ${d.proc.pid} serves the connection ${d.readyAt - d.startedAfterCrashAt} ms after the previous one died`);
      info.resend = resendLabel(state.init, forcedOff);
      if (first) {
        log(`holding the FUSE connection of ${state.dev} for daemon pid ${d.proc.pid}; FUSE_NOTIFY_RESEND ${info.resend}` +
            (resendUsable() ? "" : ": after a daemon crash the requests it had taken cannot be recovered"));
        o.onReady(d.proc.pid!);
      }
      // From here on the holder only waits: give back what starting a daemon used (heap, compiled code, code pages).
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => { Bun.gc(true); (Bun as { shrink?: () => void }).shrink?.(); dropExecutableCode(); }, 1000);
      idleTimer.unref();
    } else if (line === LINE.stopped) {
      d.stopped = true;
    } else if (line === LINE.drained) {
      d.drained = true;
    }
    d.onLine?.(line);
  };

  const onDaemonExit = (d: Daemon, code: number | null, signal: NodeJS.Signals | null) => {
    const how = describeExit(code, signal);
    // A standby that failed, or a daemon retiring for a takeover: takeOver() deals with it.
    if (d !== current || d.retiring) { d.onLine?.(`exit ${how}`); return; }
    current = undefined;
    if (d.stopped) { log(`daemon pid ${d.proc.pid} unmounted; the holder exits`); return end(0); }
    if (!state) { log(`daemon pid ${d.proc.pid} failed before the mount was ready (${how})`); return end(1); }
    const served = d.readyAt === undefined ? 0 : Date.now() - d.readyAt;
    quickFailures = served >= HEALTHY_MS ? 0 : quickFailures + 1;
    const delay = restartDelayMs(quickFailures);
    const recovered = resendUsable();
    info.lastExit = { at: new Date().toISOString(), how, recovered, said: d.lastErr };
    log(`daemon pid ${d.proc.pid} died (${how}) after serving ${(served / 1000).toFixed(1)} s; starting a new one` +
        (delay ? ` in ${delay} ms (${quickFailures} quick failures in a row)` : "") +
        (recovered ? "; it re-queues the requests the dead one had taken (FUSE_NOTIFY_RESEND)"
                   : `; FUSE_NOTIFY_RESEND is ${info.resend}: requests in flight at the crash cannot be recovered ` +
                     "(their readers wait until killed); new requests are served"));
    d.onLine?.(`exit ${how}`);
    const diedAt = Date.now();
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      info.restarts++;
      current = start({ resend: recovered });
      current.startedAfterCrashAt = diedAt;
    }, delay);
  };

  // SIGTERM/SIGINT to the holder: unmount through the daemon, as SIGTERM to the daemon does.
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, () => {
    if (current) current.proc.kill("SIGTERM");
    else end(0);
  });

  /** Hands the connection to a daemon of `newExe`: it prepares, the current one drains, then it serves. */
  const takeOver = async (newExe: string[], reply: (m: object) => void): Promise<void> => {
    const old = current;
    if (!state) throw new Error("the mount is not ready yet");
    if (!old || old.readyAt === undefined) {
      // No daemon serving (dead, restarting): the new binary simply becomes the next one, at once.
      exe = newExe;
      clearTimeout(restartTimer);
      if (old) old.proc.kill("SIGKILL");
      info.takeovers++;
      const d = current = start({ resend: resendUsable() });
      await waitLine(d, LINE.ready, STANDBY_TIMEOUT_MS, "the new daemon did not start serving");
      reply({ ok: true, pid: d.proc.pid, pauseMs: 0, note: "no daemon was serving: the new one started directly" });
      return;
    }
    info.takeovers++; // counted before the start, so the new daemon reports it
    const next = start({ standby: true, exe: newExe });
    try {
      await waitLine(next, LINE.standby, STANDBY_TIMEOUT_MS, "the new daemon did not get ready");
    } catch (e) {
      next.proc.kill("SIGKILL");
      info.takeovers--;
      throw e;
    }
    if (current !== old) {
      // The old daemon died while the new one prepared; it has been restarted from the old binary meanwhile.
      next.proc.kill("SIGKILL");
      info.takeovers--;
      throw new Error("the running daemon died during the takeover (it was restarted); run the takeover again");
    }
    const t0 = Date.now();
    old.retiring = true;
    old.proc.stdin!.write("DRAIN\n");
    let clean = true;
    try {
      await waitLine(old, `exit`, DRAIN_TIMEOUT_MS, "the old daemon did not finish its requests", true);
      clean = old.drained;
    } catch {
      old.proc.kill("SIGKILL");
      clean = false;
      await new Promise((r) => old.proc.once("exit", r));
    }
    // From here the new daemon is the one: even if it fails now, the holder restarts it like any other.
    current = next;
    next.standby = false;
    exe = newExe;
    if (current.proc.exitCode !== null || current.proc.signalCode !== null) {
      onDaemonExit(current, current.proc.exitCode, current.proc.signalCode);
      throw new Error("the new daemon exited during the handover; the holder restarts it");
    }
    // A drained daemon leaves nothing behind; one killed half-way may have: have those requests queued again.
    next.proc.stdin!.write(clean || !resendUsable() ? "GO\n" : "GO RESEND\n");
    await waitLine(next, LINE.ready, STANDBY_TIMEOUT_MS, "the new daemon did not start serving");
    const pauseMs = Date.now() - t0;
    log(`takeover: daemon pid ${old.proc.pid} ${clean ? "drained and handed over" : "was killed after the drain timeout"}; ` +
        `pid ${next.proc.pid} (${newExe[0]}) serves, reads paused ${pauseMs} ms`);
    reply({ ok: true, pid: next.proc.pid, oldPid: old.proc.pid, pauseMs, clean });
  };

  // The control socket: one JSON request line, JSON reply lines. Only root reaches it (0700 directory).
  rmSync(o.control, { force: true });
  let server: ReturnType<typeof Bun.listen> | undefined;
  try {
    server = Bun.listen<{ buf: string }>({
      unix: o.control,
      socket: {
        open(s) { s.data = { buf: "" }; },
        data(s, chunk) {
          s.data.buf += Buffer.from(chunk).toString();
          const nl = s.data.buf.indexOf("\n");
          if (nl < 0) { if (s.data.buf.length > 65536) s.end(); return; }
          const send = (m: object) => { s.write(JSON.stringify(m) + "\n"); };
          let req: { op?: string; exe?: unknown };
          try { req = JSON.parse(s.data.buf.slice(0, nl)); } catch { send({ ok: false, error: "bad request" }); s.end(); return; }
          if (req.op === "status") { send({ ok: true, holder: info, daemonPid: current?.proc.pid }); s.end(); return; }
          if (req.op !== "takeover" || !Array.isArray(req.exe) || !req.exe.every((x) => typeof x === "string") || !req.exe.length) {
            send({ ok: false, error: "unknown request" }); s.end(); return;
          }
          if (takeover) { send({ ok: false, error: "a takeover is already under way" }); s.end(); return; }
          let newExe: string[];
          try { newExe = reachableExe(req.exe as string[], (req as { pid?: unknown }).pid); } catch (e) {
            send({ ok: false, error: (e as Error).message }); s.end(); return;
          }
          log(`takeover requested: handing the connection to ${(req.exe as string[]).join(" ")}` +
              (newExe[0] !== (req.exe as string[])[0] ? ` (as ${newExe[0]}: not at that path from here)` : ""));
          takeover = takeOver(newExe, send)
            .catch((e) => { log(`takeover failed: ${(e as Error).message}`); send({ ok: false, error: (e as Error).message }); })
            .finally(() => { takeover = undefined; s.end(); });
        },
      },
    });
  } catch (e) {
    log(`no control socket ${o.control} (takeover unavailable): ${(e as Error).message}`);
  }

  current = start({});
  return done;
}

/**
 * The new binary as the holder can start it. A binary the holder sees at the path the client gave is used as it is.
 * One it does not see there (a node's holder stays in the initramfs after switch_root, and the new binary lives in
 * the booted OS; or the file was replaced since) is kept open through the client's /proc/PID/exe, and started (now
 * and at every later restart) as /proc/<holder>/fd/N, which stays valid as long as the holder runs.
 */
function reachableExe(exe: string[], pid: unknown): string[] {
  if (existsSync(exe[0]!)) return exe;
  if (typeof pid !== "number" || !Number.isInteger(pid) || pid <= 1) throw new Error(`${exe[0]} does not exist here and no client pid was given`);
  let fd: number;
  try { fd = openSync(`/proc/${pid}/exe`, "r"); } catch (e) {
    throw new Error(`${exe[0]} is not reachable from the holder, nor through /proc/${pid}/exe: ${(e as Error).message}`);
  }
  return [`/proc/${process.pid}/fd/${fd}`, ...exe.slice(1)];
}

/** Waits for a daemon's line starting with `prefix` (or its exit: "exit ..."), up to `ms`. */
function waitLine(d: Daemon, prefix: string, ms: number, what: string, exitIsOk = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const prev = d.onLine;
    const timer = setTimeout(() => { d.onLine = prev; reject(new Error(`${what} within ${ms / 1000} s`)); }, ms);
    d.onLine = (line) => {
      prev?.(line);
      if (line.startsWith(prefix) || line.startsWith("exit ")) {
        clearTimeout(timer);
        d.onLine = prev;
        if (line.startsWith(prefix) || exitIsOk) resolve(line);
        else reject(new Error(`${what}: it exited (${line.slice(5)})`));
      }
    };
  });
}

/** The holder's own process name: the daemon's with "-holder" ("@airroot-root" -> "@airroot-root-holder"). */
export function holderArgv0(daemonArgv0?: string): string {
  return `${daemonArgv0 ?? "airroot"}-holder`;
}

/** oom_score_adj -1000: the OOM killer never picks the holder. Returns the value to give back to children. */
function spareFromOom(log: (l: string) => void): number | undefined {
  const path = "/proc/self/oom_score_adj";
  if (!existsSync(path)) return undefined;
  let orig: number | undefined;
  try { orig = Number(readFileSync(path, "utf8").trim()); writeFileSync(path, "-1000\n"); } catch (e) {
    log(`could not set oom_score_adj to -1000 (the OOM killer may pick the holder): ${(e as Error).message}`);
  }
  return orig;
}
