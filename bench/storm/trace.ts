// The boot-storm's block trace: which byte ranges of the root image a boot reads, in order. No QEMU here: the image
// is attached to a loop device (read-only, buffered, so the loop reads land in the backing file's page cache), its
// squashfs mounted, and the files a Debian systemd + sshd boot opens are read in boot order (the manager, its unit
// and config files, udev and its rules and hwdb, journald/logind/networkd/NetworkManager, sshd, login, PAM, and the
// shared libraries all of those link, by ELF NEEDED); after each file the newly resident pages of the backing file
// (mincore) are appended to the trace. So the trace holds what squashfs asked of the block device plus the host
// kernel's readahead on the backing file, the same kind of inflation a node's own page cache adds.
import { existsSync, lstatSync, readdirSync, readFileSync, statSync, copyFileSync } from "node:fs";
import { join } from "node:path";
import { dropPages, newRuns, PAGE, residentPages } from "./pagecache";

export interface Trace {
  format: "airroot-storm-trace/1";
  /** sha256 of the image the offsets belong to (the packed image's name). */
  digest: string;
  imageBytes: number;
  made: string;
  how: string;
  files: number;
  fileBytes: number;
  /** Distinct image bytes the trace reads. */
  bytes: number;
  /** [offset, length] in read order, page-aligned. */
  runs: [number, number][];
}

/** Whole directories a systemd boot reads (unit files, rules, configs), and single programs it runs. */
const TREES = ["etc", "usr/lib/systemd/system", "usr/lib/systemd/system-generators", "usr/lib/systemd/network", "usr/lib/udev",
  "usr/lib/tmpfiles.d", "usr/lib/sysusers.d", "usr/lib/sysctl.d", "usr/lib/modules-load.d", "usr/lib/environment.d",
  "usr/share/dbus-1", "usr/lib/x86_64-linux-gnu/security", "usr/lib/NetworkManager", "usr/lib/locale/C.utf8"];
const PROGRAMS = ["usr/lib/systemd/systemd", "usr/lib/systemd/systemd-executor", "usr/lib/systemd/systemd-journald",
  "usr/lib/systemd/systemd-udevd", "usr/lib/systemd/systemd-logind", "usr/lib/systemd/systemd-tmpfiles",
  "usr/bin/systemd-tmpfiles", "usr/lib/systemd/systemd-sysctl", "usr/lib/systemd/systemd-modules-load",
  "usr/lib/systemd/systemd-remount-fs", "usr/lib/systemd/systemd-random-seed", "usr/lib/systemd/systemd-update-utmp",
  "usr/lib/systemd/systemd-user-sessions", "usr/lib/systemd/systemd-sysusers", "usr/bin/systemd-sysusers",
  "usr/lib/systemd/systemd-journal-flush", "usr/lib/systemd/systemd-fsck", "usr/lib/systemd/systemd-hostnamed",
  "usr/bin/udevadm", "usr/bin/systemctl", "usr/bin/journalctl", "usr/bin/dbus-daemon", "usr/bin/dbus-broker",
  "usr/bin/dbus-broker-launch", "usr/sbin/NetworkManager", "usr/sbin/sshd", "usr/lib/openssh/sshd-session",
  "usr/lib/openssh/sshd-auth", "usr/sbin/agetty", "usr/bin/login", "usr/bin/bash", "usr/bin/dash", "usr/bin/mount",
  "usr/bin/kmod", "usr/sbin/sulogin", "usr/bin/ssh-keygen", "usr/lib/os-release", "usr/lib/locale/locale-archive"];
const LIB_DIRS = ["usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu/systemd", "usr/lib/systemd", "usr/lib"];

function walk(root: string, rel: string, out: string[]): void {
  const p = join(root, rel);
  let st;
  try { st = lstatSync(p); } catch { return; }
  if (st.isDirectory()) { for (const e of readdirSync(p).sort()) walk(root, join(rel, e), out); }
  else if (st.isFile()) out.push(rel);
}

/** DT_NEEDED names of an ELF file (readelf), [] for anything else. */
function needed(path: string): string[] {
  const head = readFileSync(path).subarray(0, 4);
  if (head.toString("latin1") !== "\x7fELF") return [];
  const r = Bun.spawnSync(["readelf", "-d", path], { stdout: "pipe", stderr: "ignore" });
  return [...r.stdout.toString().matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
}

/** The boot file set under a mounted root, in the order a boot meets it: programs (and their libraries), then trees. */
export function bootFiles(root: string): string[] {
  const seen = new Set<string>(), order: string[] = [];
  const add = (rel: string) => {
    const real = resolveIn(root, rel);
    if (!real || seen.has(real)) return;
    seen.add(real);
    order.push(real);
    for (const lib of needed(join(root, real))) {
      const hit = LIB_DIRS.map((d) => join(d, lib)).find((c) => resolveIn(root, c));
      if (hit) add(hit);
    }
  };
  add("usr/lib64/ld-linux-x86-64.so.2");
  for (const p of PROGRAMS) add(p);
  // hwdb.d holds the sources hwdb.bin is compiled from: a boot reads only the .bin.
  for (const t of TREES) { const files: string[] = []; walk(root, t, files); for (const f of files) if (!f.includes("/hwdb.d/")) add(f); }
  return order;
}

/** A path inside `root` with symlinks resolved inside it (absolute targets are root-relative); undefined if absent. */
function resolveIn(root: string, rel: string, depth = 0): string | undefined {
  if (depth > 16) return undefined;
  const parts = rel.split("/").filter(Boolean);
  let cur = "";
  for (let i = 0; i < parts.length; i++) {
    const next = cur ? `${cur}/${parts[i]}` : parts[i];
    let st;
    try { st = lstatSync(join(root, next)); } catch { return undefined; }
    if (st.isSymbolicLink()) {
      const t = require("node:fs").readlinkSync(join(root, next)) as string;
      const base = t.startsWith("/") ? t.slice(1) : (cur ? `${cur}/${t}` : t);
      const rest = parts.slice(i + 1).join("/");
      return resolveIn(root, normalise(rest ? `${base}/${rest}` : base), depth + 1);
    }
    cur = next;
  }
  try { if (!statSync(join(root, cur)).isFile()) return undefined; } catch { return undefined; }
  return cur;
}

function normalise(p: string): string {
  const out: string[] = [];
  for (const s of p.split("/")) { if (s === "" || s === ".") continue; if (s === "..") out.pop(); else out.push(s); }
  return out.join("/");
}

function sh(cmd: string[]): string {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString().trim()}`);
  return r.stdout.toString().trim();
}

/**
 * Records the trace of `image` (a squashfs file named <digest>.sfs), working on a private copy in `work` so its
 * page cache starts empty. The loop device and the mount are removed before returning, also on failure.
 */
export function recordTrace(image: string, digest: string, work: string): Trace {
  const copy = join(work, "trace-image.sfs");
  copyFileSync(image, copy);
  sh(["sync", copy]);
  dropPages(copy);
  const mnt = join(work, "trace-root");
  sh(["mkdir", "-p", mnt]);
  const loop = sh(["losetup", "--read-only", "--direct-io=off", "--find", "--show", copy]);
  let mounted = false;
  try {
    sh(["mount", "-t", "squashfs", "-o", "ro", loop, mnt]);
    mounted = true;
    let before = residentPages(copy);
    const runs: [number, number][] = newRuns(new Uint8Array(before.length), before);
    const files = bootFiles(mnt);
    let fileBytes = 0;
    for (const f of files) {
      fileBytes += readFileSync(join(mnt, f)).length;
      const now = residentPages(copy);
      runs.push(...newRuns(before, now));
      before = now;
    }
    const bytes = runs.reduce((s, r) => s + r[1], 0);
    return { format: "airroot-storm-trace/1", digest, imageBytes: statSync(copy).size, made: new Date().toISOString(),
      how: "bench/storm/trace.ts: the image on a read-only buffered loop device with its squashfs mounted; the boot file set " +
        "(bootFiles: systemd, udev, journald, logind, NetworkManager, dbus, sshd, login, PAM, their unit/config trees and " +
        "every shared library they link) read whole in that order; after each file the backing file's newly resident pages " +
        `(mincore), ${PAGE}-byte pages merged into runs`,
      files: files.length, fileBytes, bytes, runs };
  } finally {
    if (mounted) Bun.spawnSync(["umount", mnt]);
    Bun.spawnSync(["losetup", "-d", loop]);
    Bun.spawnSync(["rm", "-f", copy]);
  }
}

/** The trace in `file` if it belongs to `digest`, else undefined. */
export function loadTrace(file: string, digest: string): Trace | undefined {
  if (!existsSync(file)) return undefined;
  const t = JSON.parse(readFileSync(file, "utf8")) as Trace;
  return t.format === "airroot-storm-trace/1" && t.digest === digest ? t : undefined;
}
