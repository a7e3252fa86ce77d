// `airroot mount --takeover MOUNTPOINT`: asks the mount's holder to hand its FUSE connection to a daemon of this
// binary (holder.ts does the handover), and waits for the answer.
import { existsSync } from "node:fs";
import { holderSocketPath } from "./status";

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
  return await new Promise<TakeoverResult>((resolve, reject) => {
    let buf = "";
    let settled = false;
    let sock: unknown; // referenced until the answer: an unreferenced socket may be collected (and closed) meanwhile
    const settle = (f: () => void) => { if (!settled) { settled = true; clearTimeout(timer); sock = undefined; f(); } };
    const timer = setTimeout(() => settle(() => reject(new Error(`no answer from the holder within ${timeoutMs / 1000} s`))), timeoutMs);
    Bun.connect({
      unix: path,
      socket: {
        open(s) { sock = s; s.write(JSON.stringify({ op: "takeover", exe }) + "\n"); },
        data(s, chunk) {
          buf += Buffer.from(chunk).toString();
          const nl = buf.indexOf("\n");
          if (nl < 0) return;
          let m: { ok?: boolean; error?: string } & Partial<TakeoverResult>;
          try { m = JSON.parse(buf.slice(0, nl)); } catch { m = { ok: false, error: "unreadable answer" }; }
          // Settle before end(): end() runs the close handler at once.
          settle(() => m.ok ? resolve(m as TakeoverResult) : reject(new Error(`takeover of ${mountpoint} failed: ${m.error}`)));
          s.end();
        },
        close() { settle(() => reject(new Error(`the holder of ${mountpoint} closed the connection without an answer`))); },
        error(_s, e) { settle(() => reject(new Error(`talking to the holder of ${mountpoint}: ${e.message}`))); },
      },
    }).catch((e) => settle(() => reject(new Error(`cannot reach the holder of ${mountpoint} on ${path}: ${(e as Error).message}`))));
  });
}
