// `airroot mount --takeover MOUNTPOINT`: asks the mount's holder to hand its FUSE connection to a daemon of this
// binary (holder.ts does the handover), and waits for the answer.
import { existsSync } from "node:fs";
import { holderSocketPath } from "./status";
import type { HolderInfo } from "./holder";

export interface TakeoverResult {
  pid: number;
  oldPid?: number;
  pauseMs: number;
  clean?: boolean;
  note?: string;
}

export async function requestTakeover(mountpoint: string, exe: string[], log: (l: string) => void,
  timeoutMs = 300_000): Promise<TakeoverResult> {
  const path = holderSocketPath(mountpoint);
  if (!existsSync(path)) {
    throw new Error(`no holder for ${mountpoint} (no control socket ${path}): takeover needs a mount started without --foreground`);
  }
  log(`asking the holder of ${mountpoint} to hand the connection to ${exe.join(" ")}`);
  return await holderRequest<TakeoverResult>(mountpoint, { op: "takeover", exe, pid: process.pid }, timeoutMs, "takeover");
}

/** The holder's own view (for `airroot status` while no daemon answers, e.g. between a crash and the restart). */
export async function fetchHolderStatus(mountpoint: string): Promise<{ holder: HolderInfo; daemonPid?: number }> {
  return await holderRequest(mountpoint, { op: "status" }, 5000, "status");
}

async function holderRequest<T>(mountpoint: string, req: object, timeoutMs: number, what: string): Promise<T> {
  const path = holderSocketPath(mountpoint);
  return await new Promise<T>((resolve, reject) => {
    let buf = "";
    let settled = false;
    let sock: unknown; // referenced until the answer: an unreferenced socket may be collected (and closed) meanwhile
    const settle = (f: () => void) => { if (!settled) { settled = true; clearTimeout(timer); sock = undefined; f(); } };
    const timer = setTimeout(() => settle(() => reject(new Error(`no answer from the holder within ${timeoutMs / 1000} s`))), timeoutMs);
    Bun.connect({
      unix: path,
      socket: {
        open(s) { sock = s; s.write(JSON.stringify(req) + "\n"); },
        data(s, chunk) {
          buf += Buffer.from(chunk).toString();
          const nl = buf.indexOf("\n");
          if (nl < 0) return;
          let m: { ok?: boolean; error?: string };
          try { m = JSON.parse(buf.slice(0, nl)); } catch { m = { ok: false, error: "unreadable answer" }; }
          // Settle before end(): end() runs the close handler at once.
          settle(() => m.ok ? resolve(m as T) : reject(new Error(`${what} of ${mountpoint} failed: ${m.error}`)));
          s.end();
        },
        close() { settle(() => reject(new Error(`the holder of ${mountpoint} closed the connection without an answer`))); },
        error(_s, e) { settle(() => reject(new Error(`talking to the holder of ${mountpoint}: ${e.message}`))); },
      },
    }).catch((e) => settle(() => reject(new Error(`cannot reach the holder of ${mountpoint} on ${path}: ${(e as Error).message}`))));
  });
}
