// Reaping orphaned zombies as PID 1: processes reparented to us that Bun does not know about and never waits for.
import { dlopen, FFIType } from "bun:ffi";
import { readdirSync, readFileSync } from "node:fs";

const WNOHANG = 1;
let lib: ReturnType<typeof open> | undefined;
function open() {
  return dlopen("libc.so.6", { waitpid: { args: [FFIType.i32, FFIType.ptr, FFIType.i32], returns: FFIType.i32 } });
}

/** Zombie children of `parent` (state Z in /proc/PID/stat). */
export function zombieChildren(parent = process.pid, procDir = "/proc"): number[] {
  const out: number[] = [];
  let names: string[] = [];
  try { names = readdirSync(procDir); } catch { return out; }
  for (const n of names) {
    if (!/^\d+$/.test(n)) continue;
    try {
      const stat = readFileSync(`${procDir}/${n}/stat`, "utf8");
      // "pid (comm) S ppid ...": comm may contain spaces and parentheses, so parse after the last ')'.
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (rest[0] === "Z" && Number(rest[1]) === parent) out.push(Number(n));
    } catch {}
  }
  return out;
}

/**
 * Reaps zombie children except those in `keep` (children Bun itself spawned and will wait for: reaping them here
 * would take their exit status away from Bun). Returns the reaped pids.
 */
export function reapOrphans(keep: Set<number>): number[] {
  const l = (lib ??= open()).symbols;
  const status = new Int32Array(1);
  const reaped: number[] = [];
  for (const pid of zombieChildren()) {
    if (keep.has(pid)) continue;
    if (l.waitpid(pid, status, WNOHANG) === pid) reaped.push(pid);
  }
  return reaped;
}
