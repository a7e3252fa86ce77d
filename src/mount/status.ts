// The mount daemon's status channel: an HTTP server on a unix socket named after the mount point, so
// `airroot status MOUNTPOINT` can find any running daemon without a PID file.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, rmSync, existsSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import type { HolderInfo } from "./holder";
import type { FillStatus } from "./fill";
import type { UntetheredLoop } from "./untether";

export interface DaemonStatus {
  mountpoint: string;
  pid: number;
  argv0: string;
  startedAt: string;
  image: {
    name: string; size: number; validator: string; order: string; uptimeSec: number;
    bytesFetched: number; cacheHits: number; cacheMisses: number; readsInFlight: number; readsTotal: number;
    sources: { url: string; state: string; reason?: string; rttMs?: number; bytes: number; requests: number;
      errors: number; lastError?: string; preferredRank: number }[];
  };
  fuse: Record<string, number | string>;
  // Optional: older daemons report no memory, or no blocksMiB; `airroot status` must still show them.
  memory?: { vmRssMiB: number; rssAnonMiB: number; cacheMiB: number; blocksMiB?: number };
  verified?: { manifest: string; chunkSize: number; badChunks: number };
  /** The process holding the FUSE connection across daemon crashes and takeovers (absent with --foreground). */
  holder?: HolderInfo & { daemonStart: string };
  /** `--fill`: the local copy's progress, and the loop devices switched to it (absent without --fill). */
  fill?: FillStatus & { untether?: { loops: UntetheredLoop[]; error?: string; mode: string } };
}

/** /run/airroot/mounts when /run is writable (initramfs and booted systems), else the temp dir. */
export function statusDir(): string {
  for (const dir of ["/run/airroot/mounts", join(tmpdir(), "airroot-mounts")]) {
    try { mkdirSync(dir, { recursive: true, mode: 0o700 }); return dir; } catch { /* try the next */ }
  }
  throw new Error("cannot create a directory for the status socket in /run or the temp dir");
}

export function statusSocketPath(mountpoint: string): string {
  const id = createHash("sha256").update(mountpoint).digest("hex").slice(0, 16);
  return join(statusDir(), `${id}.sock`);
}

/** The holder's control socket (takeover), beside the status socket; not named *.sock, so status scans skip it. */
export function holderSocketPath(mountpoint: string): string {
  return statusSocketPath(mountpoint).replace(/\.sock$/, ".holder");
}

/** Where a detached daemon writes its log (`airroot status --log` shows it). */
export function statusLogPath(mountpoint: string): string {
  return statusSocketPath(mountpoint).replace(/\.sock$/, ".log");
}

export function serveStatus(mountpoint: string, snapshot: () => DaemonStatus, onShutdown: () => void): { close(): void } {
  const path = statusSocketPath(mountpoint);
  if (existsSync(path)) rmSync(path, { force: true }); // a stale socket from a daemon that died
  const server = Bun.serve({
    unix: path,
    fetch(req) {
      const url = new URL(req.url);
      if (req.method === "GET" && url.pathname === "/status") return Response.json(snapshot());
      if (req.method === "POST" && url.pathname === "/unmount") { setTimeout(onShutdown, 10); return new Response("ok\n"); }
      return new Response("not found\n", { status: 404 });
    },
  });
  return { close() { server.stop(true); rmSync(path, { force: true }); } };
}

export async function fetchStatus(mountpoint: string): Promise<DaemonStatus> {
  const path = statusSocketPath(mountpoint);
  if (!existsSync(path)) throw new Error(`no airroot mount daemon serves ${mountpoint} (no status socket ${path})`);
  try {
    const res = await fetch("http://airroot/status", { unix: path, signal: AbortSignal.timeout(5000) } as RequestInit);
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return (await res.json()) as DaemonStatus;
  } catch (e) {
    throw new Error(`the mount daemon for ${mountpoint} did not answer on ${path}: ${(e as Error).message}`);
  }
}

/** Every mount daemon with a status socket here (stale sockets of dead daemons are skipped), for `airroot status`. */
export async function fetchAllStatus(): Promise<DaemonStatus[]> {
  const dir = statusDir();
  const socks = readdirSync(dir).filter((f) => f.endsWith(".sock")).sort();
  const all = await Promise.all(socks.map(async (f) => {
    try {
      const res = await fetch("http://airroot/status", { unix: join(dir, f), signal: AbortSignal.timeout(5000) } as RequestInit);
      return res.ok ? ((await res.json()) as DaemonStatus) : undefined;
    } catch { return undefined; }
  }));
  return all.filter((s): s is DaemonStatus => s !== undefined);
}

export async function requestUnmount(mountpoint: string): Promise<void> {
  const path = statusSocketPath(mountpoint);
  const res = await fetch("http://airroot/unmount", { method: "POST", unix: path, signal: AbortSignal.timeout(5000) } as RequestInit);
  if (!res.ok) throw new Error(`the mount daemon for ${mountpoint} refused to unmount: HTTP ${res.status}`);
}

const MiB = 1048576;
export function formatStatus(s: DaemonStatus): string {
  const img = s.image;
  const lines = [
    `${s.mountpoint}/${img.name}: ${(img.size / MiB).toFixed(1)} MiB, validator ${img.validator}, order ${img.order}`,
    `daemon pid ${s.pid} (${s.argv0}), up ${img.uptimeSec.toFixed(0)} s`,
    `fetched ${(img.bytesFetched / MiB).toFixed(1)} MiB, cache hits ${img.cacheHits} / misses ${img.cacheMisses}, ` +
      `reads in flight ${img.readsInFlight}, reads total ${img.readsTotal}`,
  ];
  const m = s.memory;
  if (m) {
    const mib = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : "-");
    const blocks = m.blocksMiB === undefined ? "" : `image blocks ${mib(m.blocksMiB)} MiB, `;
    lines.push(`memory: VmRSS ${mib(m.vmRssMiB)} MiB, private ${mib(m.rssAnonMiB)} MiB (of which ${blocks}in the cache ${mib(m.cacheMiB)} MiB)`);
  }
  const h = s.holder;
  if (h) {
    lines.push(`holder pid ${h.pid} (${h.argv0}): daemon restarts ${h.restarts}, takeovers ${h.takeovers}, FUSE_NOTIFY_RESEND ${h.resend}`);
    lines.push(`this daemon: ${h.daemonStart}`);
    if (h.resend !== "supported" && h.resend !== "unknown")
      lines.push("warning: without FUSE_NOTIFY_RESEND, requests in flight when a daemon crashes cannot be recovered (their readers wait until killed); takeovers lose nothing");
  } else lines.push("no holder (--foreground): a crash of this daemon ends the mount");
  if (s.fill) lines.push(...formatFill(s.fill));
  if (s.verified) lines.push(`verified against ${s.verified.manifest} (chunk ${s.verified.chunkSize / 1024} KiB), bad chunks seen ${s.verified.badChunks}`);
  lines.push("", "  RANK STATE     RTT      MiB       REQS  ERRS  URL");
  for (const src of [...img.sources].sort((a, b) => a.preferredRank - b.preferredRank)) {
    const rtt = src.rttMs === undefined ? "-" : `${src.rttMs.toFixed(1)}ms`;
    lines.push(`  ${String(src.preferredRank).padStart(4)} ${src.state.padEnd(9)} ${rtt.padStart(8)} ${(src.bytes / MiB).toFixed(1).padStart(8)} ` +
      `${String(src.requests).padStart(6)} ${String(src.errors).padStart(5)}  ${src.url}`);
    if (src.lastError) lines.push(`${" ".repeat(12)}last error: ${src.lastError}`);
  }
  return lines.join("\n");
}

/** The fill's lines: "fill PATH: 42.0% (…), 12.3 MB/s, ETA 1m05s" and "untethered: /dev/loop3 ...". */
export function formatFill(f: NonNullable<DaemonStatus["fill"]>): string[] {
  const pct = f.size > 0 ? (100 * f.filledBytes) / f.size : 100;
  const eta = f.etaSec === undefined ? "ETA -" : f.etaSec === 0 ? "" : `ETA ${f.etaSec >= 60 ? `${Math.floor(f.etaSec / 60)}m${String(f.etaSec % 60).padStart(2, "0")}s` : `${f.etaSec}s`}`;
  const cap = f.rateCapBytesPerSec ? ` (cap ${(f.rateCapBytesPerSec / 1e6).toFixed(1)} MB/s)` : "";
  const loops = f.untether?.loops ?? [];
  const state = loops.length ? "untethered" : f.state;
  const lines = [`fill ${f.path}: ${state}, filled ${pct.toFixed(1)}% (${(f.filledBytes / MiB).toFixed(1)} of ${(f.size / MiB).toFixed(1)} MiB), ` +
    `rate ${(f.rateBytesPerSec / 1e6).toFixed(1)} MB/s${cap}${eta ? `, ${eta}` : ""}` + (f.reason ? ` (${f.reason})` : "") +
    (f.readFromCopyBytes ? `; reads served from the copy ${(f.readFromCopyBytes / MiB).toFixed(1)} MiB` : "")];
  for (const l of loops) lines.push(`untethered: ${l.dev} reads ${f.path} since ${l.at} (${l.directIo ? "direct I/O" : "buffered"}): no image server needed`);
  if (f.untether?.error) lines.push(`untether failed: ${f.untether.error}`);
  return lines;
}
