// STATE/boot/: the network boot files `airroot serve` serves under /boot/ (the kernel, the initramfs, Debian's iPXE
// binaries, optionally a signed unified kernel image and the Secure Boot chain shim + signed GRUB), put there by
// `airroot serve boot-files`. Each is copied in under a temporary name, synced and renamed,
// so a node fetching one during an update gets the old file or the new one, never a mix; a kernel and an initramfs
// are installed together (both renamed only once both copies are complete). Only regular files are ever served from
// here (serveFile: no symlink followed), so the copies are real files even where the source is a link (Debian's
// /usr/lib/ipxe/ipxe.efi links to /boot/ipxe.efi).
import { chmodSync, closeSync, existsSync, fsyncSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { statePaths } from "./state.ts";
import { BOOT_FILE_NAMES, grubTftpConfig, type BootFileName } from "./bootscript.ts";

/** Where Debian's `ipxe` package puts its binaries. */
export const DEBIAN_IPXE_DIR = "/usr/lib/ipxe";
export const IPXE_BINARIES = ["undionly.kpxe", "ipxe.efi", "snponly.efi"] as const satisfies readonly BootFileName[];

export interface BootFilesRequest {
  kernel?: string;
  initrd?: string;
  /** Directory with undionly.kpxe, ipxe.efi, snponly.efi; undefined: DEBIAN_IPXE_DIR if it exists; null: none. */
  ipxeDir?: string | null;
  /** A signed unified kernel image (`airroot media uki`), served as /boot/airroot.efi for UEFI HTTP boot. */
  uki?: string;
  /** A FAT disk image (`airroot media img`), served as /boot/boot.img for UEFI HTTP boot to mount as a RAM disk. */
  img?: string;
  /** Debian's signed shim and network GRUB (initramfs/fetch-signed-boot.sh), served as shimx64.efi and grubx64.efi. */
  shim?: string;
  grub?: string;
}

/**
 * The signed network GRUB of Debian 12 (2.06) has no http module: under UEFI HTTP boot its prefix is
 * (http,SERVER)/grub, which it cannot read, and it stops at its prompt. Debian 13's (2.12) has one. Its HTTP client
 * is the only one in GRUB that sends this request line, so its absence is a reliable sign.
 */
function grubHasHttp(file: string): boolean {
  return readFileSync(file).includes("HTTP/1.1");
}

export interface BootFileEntry { name: BootFileName; size: number; mtime: Date }
export interface BootFilesResult { installed: { name: BootFileName; from: string; size: number }[]; warnings: string[]; present: BootFileEntry[] }

function readHead(file: string, n: number): Buffer {
  const fd = openSync(file, "r");
  try { const b = Buffer.alloc(n); const got = readSync(fd, b, 0, n, 0); return b.subarray(0, got); } finally { closeSync(fd); }
}

/** Warnings for a file that does not look like a kernel / an initramfs (not fatal: other architectures exist). */
function lookWarnings(kind: "kernel" | "initrd" | "efi" | "disk", file: string): string[] {
  const h = readHead(file, 0x240);
  if (kind === "disk") {
    // A FAT boot sector (or an MBR) ends in 55 AA; firmware mounts nothing else as a RAM disk it can boot from.
    return h.length >= 512 && h[510] === 0x55 && h[511] === 0xaa ? [] : [`${file} does not look like a disk image (no boot sector signature): the firmware will find nothing to boot in it`];
  }
  if (kind === "efi") {
    const pe = h.length >= 0x40 && h.toString("latin1", 0, 2) === "MZ" && h.readUInt32LE(0x3c) + 4 <= h.length &&
      h.toString("latin1", h.readUInt32LE(0x3c), h.readUInt32LE(0x3c) + 4) === "PE\0\0";
    return pe ? [] : [`${file} does not look like an EFI executable (no MZ/PE header): UEFI HTTP boot will refuse it`];
  }
  if (kind === "kernel") {
    const bz = h.length >= 0x206 && h.toString("latin1", 0x202, 0x206) === "HdrS";
    const arm64 = h.length >= 0x40 && h.readUInt32LE(0x38) === 0x644d5241;
    return bz || arm64 ? [] : [`${file} does not look like a Linux kernel (no bzImage or arm64 Image header)`];
  }
  const magic = h.subarray(0, 6);
  const known = [Buffer.from("070701"), Buffer.from("070702"), Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.from([0x1f, 0x8b]),
    Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a]), Buffer.from([0x02, 0x21, 0x4c, 0x18]), Buffer.from([0x89, 0x4c, 0x5a, 0x4f])];
  return known.some((k) => magic.subarray(0, k.length).equals(k)) ? [] : [`${file} does not look like an initramfs (no cpio, zstd, gzip, xz, lz4 or lzo magic)`];
}

/** A source must be a readable, non-empty regular file (following links: it is the admin's input). */
function checkSource(src: string): void {
  let st;
  try { st = statSync(src); } catch (e) { throw new Error(`boot-files: cannot read ${src}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message}`); }
  if (!st.isFile()) throw new Error(`boot-files: ${src} is not a regular file`);
  if (st.size === 0) throw new Error(`boot-files: ${src} is empty`);
}

/** Copies src to a temporary file in dir; returns its name. */
function copyToTemp(src: string, dir: string, name: string): { tmp: string; size: number } {
  checkSource(src);
  const tmp = join(dir, `.${name}.${randomBytes(6).toString("hex")}.tmp`);
  const inFd = openSync(src, "r");
  const outFd = openSync(tmp, "wx", 0o644);
  let size = 0;
  try {
    const buf = Buffer.alloc(1 << 20);
    for (;;) {
      const n = readSync(inFd, buf, 0, buf.length, null);
      if (n === 0) break;
      let off = 0;
      while (off < n) off += writeSync(outFd, buf, off, n - off);
      size += n;
    }
    fsyncSync(outFd);
  } catch (e) {
    closeSync(outFd); rmSync(tmp, { force: true });
    throw new Error(`boot-files: copying ${src}: ${(e as Error).message}`);
  } finally { closeSync(inFd); }
  closeSync(outFd);
  chmodSync(tmp, 0o644);
  return { tmp, size };
}

/** The boot files present now (regular files only), in BOOT_FILE_NAMES order. */
export function listBootFiles(stateDir: string): BootFileEntry[] {
  const dir = statePaths(stateDir).boot;
  const out: BootFileEntry[] = [];
  for (const name of BOOT_FILE_NAMES) {
    try {
      const st = lstatSync(join(dir, name));
      if (st.isFile()) out.push({ name, size: st.size, mtime: st.mtime });
    } catch { /* absent */ }
  }
  return out;
}

/**
 * STATE/boot/grub/grub.cfg for UEFI PXE under Secure Boot: there GRUB comes over TFTP and reads its config from the
 * TFTP root (STATE/boot, or the copy dnsmasq's --tftp-root serves). Written atomically beside the binaries.
 */
function writeTftpGrubConfig(bootDir: string): void {
  const dir = join(bootDir, "grub");
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.grub.cfg.${randomBytes(6).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", 0o644);
  try { writeSync(fd, grubTftpConfig()); fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, join(dir, "grub.cfg"));
}

/** Installs the given boot files into STATE/boot/ atomically (each file), the kernel and initramfs as a pair. */
export function installBootFiles(stateDir: string, r: BootFilesRequest): BootFilesResult {
  const dir = statePaths(stateDir).boot;
  if (!existsSync(statePaths(stateDir).config)) throw new Error(`boot-files: ${stateDir} is not a server state dir; run \`airroot serve init --state ${stateDir}\` first`);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const warnings: string[] = [];
  const plan: { name: BootFileName; from: string }[] = [];
  if (r.kernel) { plan.push({ name: "vmlinuz", from: r.kernel }); }
  if (r.initrd) { plan.push({ name: "initramfs", from: r.initrd }); }
  if (r.uki) { plan.push({ name: "airroot.efi", from: r.uki }); }
  if (r.img) { plan.push({ name: "boot.img", from: r.img }); }
  if (!r.shim !== !r.grub) throw new Error("boot-files: give --shim and --grub together (shim loads grubx64.efi from its own directory)");
  if (r.shim && r.grub) { plan.push({ name: "shimx64.efi", from: r.shim }, { name: "grubx64.efi", from: r.grub }); }
  const ipxeDir = r.ipxeDir === undefined ? (existsSync(DEBIAN_IPXE_DIR) ? DEBIAN_IPXE_DIR : null) : r.ipxeDir;
  if (r.ipxeDir === undefined && ipxeDir === null) warnings.push(`no ${DEBIAN_IPXE_DIR}: install Debian's ipxe package (apt-get install ipxe) for undionly.kpxe, ipxe.efi and snponly.efi, or give --ipxe-dir`);
  if (ipxeDir) {
    for (const b of IPXE_BINARIES) {
      const f = join(ipxeDir, b);
      if (existsSync(f)) plan.push({ name: b, from: f });
      else warnings.push(`${f} is missing: nodes that need ${b} cannot boot through it`);
    }
  }
  for (const p of plan) checkSource(p.from); // every source before anything is copied
  for (const p of plan) {
    if (p.name === "vmlinuz") warnings.push(...lookWarnings("kernel", p.from));
    if (p.name === "initramfs") warnings.push(...lookWarnings("initrd", p.from));
    if (p.name === "boot.img") warnings.push(...lookWarnings("disk", p.from));
    if (p.name === "airroot.efi" || p.name === "shimx64.efi" || p.name === "grubx64.efi") warnings.push(...lookWarnings("efi", p.from));
    if (p.name === "grubx64.efi" && !grubHasHttp(p.from)) {
      warnings.push(`${p.from} has no HTTP client (Debian 12's signed network GRUB has none): under UEFI HTTP boot it cannot read /grub/grub.cfg and stops at its prompt; use Debian 13's (initramfs/fetch-signed-boot.sh, or dist/grubx64.efi from make initramfs)`);
    }
  }
  const temps: { name: BootFileName; from: string; tmp: string; size: number }[] = [];
  try {
    for (const p of plan) temps.push({ ...p, ...copyToTemp(p.from, dir, p.name) });
    for (const t of temps) renameSync(t.tmp, join(dir, t.name));
  } finally {
    for (const t of temps) rmSync(t.tmp, { force: true });
  }
  if (r.shim && r.grub) writeTftpGrubConfig(dir);
  const fd = openSync(dir, "r");
  try { fsyncSync(fd); } finally { closeSync(fd); }
  return { installed: temps.map((t) => ({ name: t.name, from: t.from, size: t.size })), warnings, present: listBootFiles(stateDir) };
}
