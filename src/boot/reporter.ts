// The boot reporter: PID 1 execs the new root's init at switch_root, so a small child (`@airroot-report`, spared by
// systemd like every '@' process) reports what happens after: stage "switched-root" once the new init is PID 1,
// "running" once the booted system's airroot-booted.service (WantedBy=multi-user.target) tells it so through a unix
// socket in /run/airroot/report (root only; /run moves into the new root, so the booted OS reaches it at the same
// path), or "boot-stalled" when that word has not come within a bounded wait. Then it exits.
// It runs beside the booted OS, whose root can read its memory (/proc/PID/mem, ptrace): so it holds nothing worth
// stealing. Not the node's client certificate and key: PID 1, which still has them, asks the server for a one-boot
// report token (POST /api/v1/self/report-token) and hands the reporter only that, the site CA and the server URLs
// (on a pipe). The token can post only those stages, for this node, until a final one or its expiry.
// A boot that untethers (airroot.untether=) keeps the reporter after "running": it watches the root daemon's status
// until the loop device is switched to the local copy and reports "untethered" (bounded by the token's lifetime).
import { chmodSync, mkdirSync, readlinkSync, rmSync } from "node:fs";
import { join } from "node:path";
import { selfCommand } from "../util/self";
import { NodeApi, reportWithToken, type NodeCredential, type ReportToken } from "../client/api";
import { arr, int, nodeName, obj, opt, parseJson, str } from "../server/schema";
import { reportBounded } from "./trust";
import { fetchStatus, type DaemonStatus } from "../mount/status";

export const REPORTER_ARGV0 = "@airroot-report";
/** The directory (0700, root) and socket the booted system's unit writes to. */
export const REPORT_DIR = "/run/airroot/report";
export const REPORT_SOCKET = `${REPORT_DIR}/booted.sock`;
/** The one message the socket takes, and its answer. */
export const BOOTED_MESSAGE = "multi-user.target reached\n";
export const READY_LINE = "AIRROOT-REPORTER-READY";
/** How long the reporter waits for the booted system by default. */
export const DEFAULT_RUNNING_WAIT_SEC = 600;

/** What PID 1 hands the reporter on its stdin (JSON, one object). No credential: see the top of this file. */
export interface ReporterInput {
  /** The server that issued the token first, then the others. */
  servers: string[];
  siteCa: string;
  node: string;
  /** The one-boot report token (POST /api/v1/report). */
  token: string;
  /** How long to wait for the booted system's word after switch_root. */
  waitSec: number;
  /** How long to wait for the new init to become PID 1 (default 60). */
  switchWaitSec?: number;
  socket?: string;        // default REPORT_SOCKET
  /** The executable PID 1 is before switch_root (default: this process's /proc/self/exe). */
  initramfsInit?: string;
  /** Pid whose exe change means "switched" (default 1; tests use their own). */
  pid?: number;
  /** The root mount's mount point when the boot untethers: wait for its daemon to say so, then report "untethered". */
  untetherMount?: string;
  /** How long to wait for that (default: until the token's lifetime is nearly over). */
  untetherWaitSec?: number;
}

/** The reporter's input exactly: anything else (a credential above all) is refused. */
const reporterInputSchema = obj({
  servers: arr(str({ min: 1, max: 1024 }), { min: 1, max: 64 }),
  siteCa: str({ min: 1, max: 65_536 }),
  node: nodeName,
  token: str({ min: 43, max: 43, pattern: /^[A-Za-z0-9_-]{43}$/, what: "a report token" }),
  waitSec: int({ min: 0, max: 86_400 }),
  switchWaitSec: opt(int({ min: 0, max: 86_400 })),
  socket: opt(str({ min: 1, max: 108 })),
  initramfsInit: opt(str({ min: 1, max: 4096 })),
  pid: opt(int({ min: 1, max: 4_194_304 })),
  untetherMount: opt(str({ min: 1, max: 4096, pattern: /^\//, what: "an absolute mount point" })),
  untetherWaitSec: opt(int({ min: 0, max: 86_400 })),
});

/**
 * PID 1, before switch_root: asks the servers in turn (within `budgetMs` in all) for the node's report token with the
 * node credential. Throws when none gave one (the boot goes on without a reporter).
 */
export async function requestReportToken(servers: string[], siteCa: string, credential: Pick<NodeCredential, "certPem" | "keyPem">,
  budgetMs = 5000, untether = false): Promise<{ server: string } & ReportToken> {
  const errors: string[] = [];
  const attempt = async () => {
    for (const s of servers) {
      const api = new NodeApi(s, siteCa, credential);
      try { return { server: s, ...(await api.reportToken({ untether })) }; } catch (e) { errors.push((e as Error).message); } finally { await api.close(); }
    }
    return undefined;
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const r = await Promise.race([attempt(), new Promise<"timeout">((ok) => { timer = setTimeout(() => ok("timeout"), budgetMs); })]);
  clearTimeout(timer);
  if (r && r !== "timeout") return r;
  throw new Error(`no report token${r === "timeout" ? ` within ${budgetMs / 1000} s` : ""}: ${errors.join("; ") || "no answer"}`);
}

/** The reporter's input for a trusted node: a fresh report token, never the credential itself. */
export async function reporterInputFor(t: { servers: string[]; credential: Pick<NodeCredential, "certPem" | "keyPem" | "node"> }, siteCa: string,
  waitSec = DEFAULT_RUNNING_WAIT_SEC, budgetMs = 5000, untetherMount?: string): Promise<ReporterInput> {
  const rt = await requestReportToken(t.servers, siteCa, t.credential, budgetMs, untetherMount !== undefined);
  const input: ReporterInput = { servers: [rt.server, ...t.servers.filter((s) => s !== rt.server)], siteCa, node: t.credential.node, token: rt.token, waitSec };
  if (untetherMount !== undefined) {
    input.untetherMount = untetherMount;
    // An hour less than the token's life (a server answers with its expiry), at least 10 minutes.
    const left = Math.floor((Date.parse(rt.expires) - Date.now()) / 1000) - 3600;
    input.untetherWaitSec = Math.min(86_400, Math.max(600, Number.isFinite(left) ? left : 600));
  }
  return input;
}

/** The systemd unit personalize puts into the new root: ordered after multi-user.target, it only sends one message. */
export function bootedUnit(airroot = "/usr/local/sbin/airroot"): string {
  return [
    "# Written by airroot init: tells the boot reporter (@airroot-report) that the system is up, so the deployment",
    "# server shows this node as \"running\". Failures are ignored ('-'): the reporter then reports what it knows.",
    "[Unit]",
    "Description=Report the boot as finished to the airroot deployment server",
    "After=multi-user.target",
    "",
    "[Service]",
    "Type=oneshot",
    `ExecStart=-${airroot} init booted`,
    "TimeoutStartSec=30",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** `airroot init booted` (run by the unit): tells the reporter; a reporter that is gone is not an error worth more. */
export async function sendBooted(socket = REPORT_SOCKET, timeoutMs = 10_000): Promise<string> {
  return await new Promise<string>((resolve, reject) => {
    let reply = "";
    const timer = setTimeout(() => reject(new Error(`no answer from the airroot boot reporter on ${socket} within ${timeoutMs / 1000} s`)), timeoutMs);
    Bun.connect({
      unix: socket,
      socket: {
        open(s) { s.write(BOOTED_MESSAGE); },
        data(_s, d) { reply += Buffer.from(d).toString(); },
        close() { clearTimeout(timer); resolve(reply.trim()); },
        error(_s, e) { clearTimeout(timer); reject(e); },
        connectError(_s, e) { clearTimeout(timer); reject(new Error(`the airroot boot reporter is not listening on ${socket} (${e.message})`)); },
      },
    }).catch((e) => { clearTimeout(timer); reject(e); });
  });
}

/**
 * Starts the reporter child with `input` on its stdin and waits (bounded) until it listens on its socket. Returns its
 * pid; throws when it did not get ready (the caller goes on without it).
 */
export async function startReporter(input: ReporterInput, readyTimeoutMs = 15_000, self = selfCommand()): Promise<number> {
  const p = Bun.spawn([...self, "init", "report"], {
    argv0: REPORTER_ARGV0, stdin: "pipe", stdout: "pipe", stderr: "inherit",
  });
  p.stdin.write(JSON.stringify(input));
  await p.stdin.end();
  const reader = p.stdout.getReader();
  let seen = "";
  const ready = (async () => {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return false;
      seen += new TextDecoder().decode(value);
      if (seen.includes(READY_LINE)) return true;
    }
  })();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ok = await Promise.race([ready, new Promise<boolean>((r) => { timer = setTimeout(() => r(false), readyTimeoutMs); })]);
  clearTimeout(timer);
  reader.releaseLock();
  if (!ok) {
    p.kill("SIGKILL");
    throw new Error(`the boot reporter did not get ready within ${readyTimeoutMs / 1000} s${seen ? `: ${seen.trim().slice(0, 200)}` : ""}`);
  }
  p.unref();
  return p.pid;
}

function exeOf(pid: number): string | undefined {
  try { return readlinkSync(`/proc/${pid}/exe`); } catch { return undefined; }
}

/** Listens for the booted system's message; `booted` resolves when it came. */
function listenForBooted(socket: string): { booted: Promise<void>; close(): void } {
  mkdirSync(join(socket, ".."), { recursive: true, mode: 0o700 });
  chmodSync(join(socket, ".."), 0o700); // only root in the booted system may say it is up
  rmSync(socket, { force: true });
  let said: () => void = () => {};
  const booted = new Promise<void>((r) => { said = r; });
  const server = Bun.listen<{ buf: string }>({
    unix: socket,
    socket: {
      open(s) { s.data = { buf: "" }; },
      data(s, d) {
        s.data.buf += Buffer.from(d).toString();
        if (s.data.buf.length > 256) { s.end("too long\n"); return; }
        if (!s.data.buf.endsWith("\n")) return;
        if (s.data.buf !== BOOTED_MESSAGE) { s.end("unknown message\n"); return; }
        s.end("reported\n");
        said();
      },
    },
  });
  let closed = false;
  return { booted, close() { if (closed) return; closed = true; server.stop(true); rmSync(socket, { force: true }); } };
}

/**
 * The reporter's body (`airroot init report`, stdin = ReporterInput): listen, say ready, wait for the switch and
 * report "switched-root", wait (bounded) for the booted system and report "running" or "boot-stalled", return.
 */
export async function runReporter(input: ReporterInput, out: (l: string) => void = (l) => void process.stdout.write(l),
  warn: (l: string) => void = (l) => void process.stderr.write(`airroot: ${l}\n`)): Promise<"running" | "boot-stalled" | "no-switch"> {
  const socket = input.socket ?? REPORT_SOCKET;
  const pid = input.pid ?? 1;
  const switchWaitSec = input.switchWaitSec ?? 60;
  const before = input.initramfsInit ?? exeOf(pid);
  const report = (stage: string, detail: string, more = false) => reportBounded(input.servers, stage, warn, 15_000,
    (s) => reportWithToken(s, input.siteCa, { node: input.node, token: input.token, stage, detail: detail.slice(0, 500), more }));
  const l = listenForBooted(socket);
  try {
    out(`${READY_LINE}\n`);
    // The switch: PID 1's executable changes from airroot to the new root's init.
    const switchDeadline = Date.now() + switchWaitSec * 1000;
    let exe = exeOf(pid);
    while (exe === before && Date.now() < switchDeadline) { await Bun.sleep(100); exe = exeOf(pid); }
    if (exe === before) {
      warn(`the boot reporter saw no switch_root within ${switchWaitSec} s; not reporting`);
      return "no-switch";
    }
    const switchedAt = Date.now();
    await report("switched-root", `PID 1 is ${exe ?? "(gone)"}`);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const r = await Promise.race([l.booted.then(() => "running" as const),
      new Promise<"boot-stalled">((ok) => { timer = setTimeout(() => ok("boot-stalled"), input.waitSec * 1000); })]);
    clearTimeout(timer);
    const secs = Math.round((Date.now() - switchedAt) / 1000);
    if (r === "running") await report("running", `multi-user.target reached ${secs} s after switch_root`, input.untetherMount !== undefined);
    else await report("boot-stalled", `no word from the booted system's airroot-booted.service ${secs} s after switch_root (multi-user.target not reached?)`);
    if (r === "running" && input.untetherMount !== undefined) {
      l.close();
      const u = await waitUntethered(input.untetherMount, (input.untetherWaitSec ?? 3600) * 1000, warn);
      if (u) await report("untethered", u);
    }
    return r;
  } finally {
    l.close();
  }
}

/**
 * Polls the root daemon's status (its socket is bound back into the initramfs's /run at switch_root) until a loop
 * device reads the local copy; returns the stage detail, or undefined when the wait ran out or the fill failed.
 */
export async function waitUntethered(mountpoint: string, waitMs: number, warn: (l: string) => void,
  pollMs = 5000, status: (mp: string) => Promise<DaemonStatus> = fetchStatus): Promise<string | undefined> {
  const deadline = Date.now() + waitMs;
  let lastError = "";
  while (Date.now() < deadline) {
    try {
      const s = await status(mountpoint);
      const f = s.fill;
      if (!f) { warn(`the root daemon on ${mountpoint} runs no background fill; not reporting "untethered"`); return undefined; }
      const loop = f.untether?.loops[0];
      if (loop) return `${loop.dev} reads the local copy ${f.path} (${(f.size / 1048576).toFixed(0)} MiB, verified) since ${loop.at}: no image server needed`;
      if (f.untether?.error && f.untether.error !== lastError) warn(`untethering: ${(lastError = f.untether.error)}`);
    } catch (e) {
      if ((e as Error).message !== lastError) warn(`untethering: ${(lastError = (e as Error).message)}`);
    }
    await Bun.sleep(Math.min(pollMs, Math.max(0, deadline - Date.now())));
  }
  warn(`the root was not untethered within ${Math.round(waitMs / 1000)} s; not reporting "untethered"`);
  return undefined;
}

/** Parses the reporter's input; a field it does not know (such as a credential) is an error. */
export function parseReporterInput(text: string): ReporterInput {
  try { return parseJson(text, reporterInputSchema); } catch (e) {
    throw new Error(`the boot reporter's input is not valid: ${(e as Error).message}`);
  }
}

/** Reads the whole of stdin (the reporter's input) and parses it. */
export async function readReporterInput(): Promise<ReporterInput> {
  return parseReporterInput(await new Response(Bun.stdin.stream()).text());
}
