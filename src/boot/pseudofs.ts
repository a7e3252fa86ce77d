// Mounts the kernel's pseudo filesystems the boot needs: /proc, /sys, /dev (+ pts, shm), /run.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { mount, MS_NODEV, MS_NOEXEC, MS_NOSUID } from "../sys/libc";

interface PseudoMount { source: string; target: string; fstype: string; flags: number; data?: string }

export const PSEUDO_MOUNTS: PseudoMount[] = [
  { source: "proc", target: "/proc", fstype: "proc", flags: MS_NOSUID | MS_NODEV | MS_NOEXEC },
  { source: "sysfs", target: "/sys", fstype: "sysfs", flags: MS_NOSUID | MS_NODEV | MS_NOEXEC },
  { source: "devtmpfs", target: "/dev", fstype: "devtmpfs", flags: MS_NOSUID, data: "mode=0755" },
  // sshd needs ptys for interactive sessions.
  { source: "devpts", target: "/dev/pts", fstype: "devpts", flags: MS_NOSUID | MS_NOEXEC, data: "gid=5,mode=620,ptmxmode=000" },
  { source: "tmpfs", target: "/dev/shm", fstype: "tmpfs", flags: MS_NOSUID | MS_NODEV, data: "mode=1777" },
  { source: "tmpfs", target: "/run", fstype: "tmpfs", flags: MS_NOSUID | MS_NODEV, data: "mode=0755" },
];

/** The mount points already mounted (from /proc/self/mounts), so re-running is harmless. */
function mountedTargets(root: string): Set<string> {
  try {
    return new Set(readFileSync(join(root, "proc/self/mounts"), "utf8").split("\n").map((l) => l.split(" ")[1]).filter(Boolean));
  } catch {
    return new Set();
  }
}

/** Mounts whatever of PSEUDO_MOUNTS is not mounted yet; returns the targets it mounted. */
export function mountPseudoFilesystems(root = "/"): string[] {
  const done: string[] = [];
  for (const m of PSEUDO_MOUNTS) {
    const target = join(root, m.target);
    if (mountedTargets(root).has(m.target)) continue;
    if (!existsSync(target)) mkdirSync(target, { recursive: true, mode: 0o755 });
    mount({ source: m.source, target, fstype: m.fstype, flags: m.flags, data: m.data ?? null });
    done.push(m.target);
  }
  return done;
}
