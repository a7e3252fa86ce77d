// Keeping only the code the daemon runs in its resident set.
//
// A compiled Bun executable is ~113 MiB, ~80 MiB of it machine code. Starting up (JSC, module loading, citty, the TLS
// handshake, mounting) touches ~31 MiB of that code and ~6 MiB of its read-only data, and VmRSS counts every touched
// page for as long as it stays mapped, although serving reads runs far less. madvise(MADV_DONTNEED) on those mappings
// unmaps their pages from this process only: they stay in the page cache (or the initramfs) and come back through
// minor faults when used again, so what stays resident is what the daemon actually runs. (Android's compaction of
// cached apps does the same to their file-backed memory.) It frees no RAM on a diskless node, where the initramfs
// holds the whole executable anyway; it makes the daemon's VmRSS its working set. Compiled daemon, 1 GiB read from
// nginx on loopback: VmRSS idle 51 → 31 MiB, peak during the read 69 → 60-62, same MB/s and CPU.
//
// Only private, non-writable mappings of the executable whose pages all still match the file (smaps "Anonymous: 0
// kB") are advised: MADV_DONTNEED on a private mapping throws away every page the process has written (relocated
// data made read-only afterwards, a patched page), so a mapping holding one is left alone, and so is every writable
// mapping (a page could be written between reading smaps and advising).
import { readFileSync, readlinkSync } from "node:fs";
import { madvise, MADV_DONTNEED } from "./libc";

export interface CodeRange {
  start: number;
  length: number;
}

/** The executable's read-only (r-xp, r--p) mappings in an smaps text that hold no private (written) pages. */
export function droppableCodeRanges(smaps: string, exePath: string): CodeRange[] {
  const out: CodeRange[] = [];
  let current: (CodeRange & { clean: boolean }) | undefined;
  const finish = () => { if (current?.clean) out.push({ start: current.start, length: current.length }); current = undefined; };
  for (const line of smaps.split("\n")) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) [0-9a-f]+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      finish();
      if ((head[3] === "r-xp" || head[3] === "r--p") && head[4] === exePath) {
        const start = parseInt(head[1], 16), end = parseInt(head[2], 16);
        if (end > start) current = { start, length: end - start, clean: false };
      }
      continue;
    }
    // "Anonymous:" counts this mapping's private copies; without the line we cannot know, so we do not touch it.
    const anon = /^Anonymous:\s+(\d+) kB/.exec(line);
    if (anon && current) current.clean = anon[1] === "0";
  }
  finish();
  return out;
}

/**
 * Unmaps this process's resident pages of its own executable's code (see above). Returns the bytes of address range
 * advised. Never throws: on any failure (no procfs, an old kernel) the pages simply stay resident.
 */
export function dropExecutableCode(): number {
  try {
    // The link's text, as smaps names the mapping: "/path/airroot (deleted)" too if the file was replaced meanwhile.
    const ranges = droppableCodeRanges(readFileSync("/proc/self/smaps", "utf8"), readlinkSync("/proc/self/exe"));
    let advised = 0;
    for (const r of ranges) {
      madvise(r.start, r.length, MADV_DONTNEED);
      advised += r.length;
    }
    return advised;
  } catch {
    return 0;
  }
}
