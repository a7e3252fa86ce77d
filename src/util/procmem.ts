// This process's memory as the kernel counts it, for `airroot status`: an admin asking "how much RAM does the root
// filesystem daemon take on my nodes" wants these two numbers.
import { readFileSync } from "node:fs";

export interface ProcessMemory {
  /** Resident set: private memory plus the executable's mapped pages (shared, reclaimable). MiB. */
  vmRssMiB: number;
  /** Private memory only (heaps, blocks). MiB. */
  rssAnonMiB: number;
}

/** A "kB" field of a /proc/PID/status text (VmRSS, VmHWM, RssAnon, ...) in MiB; NaN when it is missing. */
export function statusFieldMiB(statusText: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(statusText);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Reads /proc/self/status; a field that is missing (no procfs) comes back as NaN. */
export function processMemory(statusText?: string): ProcessMemory {
  let text = statusText;
  if (text === undefined) {
    try { text = readFileSync("/proc/self/status", "utf8"); } catch { text = ""; }
  }
  return { vmRssMiB: statusFieldMiB(text, "VmRSS"), rssAnonMiB: statusFieldMiB(text, "RssAnon") };
}
