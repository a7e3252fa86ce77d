// What goes into boot media besides GRUB: the kernel (its version from the bzImage header), the initramfs files
// (checked by magic), the site cpio (the site directory at /etc/airroot/site plus the first stage's record of the
// initramfs it fetches), and a reader for the newc cpio that `airroot media inspect` uses.
import { createHash, X509Certificate } from "node:crypto";
import { lstatSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { CpioArchive } from "../../initramfs/cpio";
import { MediaError } from "./tools";

/** Where the site directory lives in the initramfs (as `make initramfs SITE=DIR` puts it). */
export const SITE_PATH = "etc/airroot/site";
/** The first stage's record of the full initramfs: "SHA256 SIZE URLPATH" (initramfs/stage1.sh reads it). */
export const STAGE2_PATH = "etc/airroot/stage2";
/** Where `airroot serve boot-files` publishes the initramfs on every server. */
export const STAGE2_URL_PATH = "/boot/initramfs";

export const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/** The release (uname -r) of a bzImage, the first word of its version string (boot protocol 2.0+ header: "HdrS" at 0x202, kernel_version at 0x20e). */
export function kernelVersion(image: Uint8Array): string {
  const b = Buffer.from(image.buffer, image.byteOffset, image.byteLength);
  if (b.length < 0x210 || b.toString("latin1", 0x202, 0x206) !== "HdrS") throw new Error("not an x86 bzImage (no HdrS header)");
  const off = b.readUInt16LE(0x20e) + 0x200;
  if (off >= b.length) throw new Error("bzImage kernel_version offset out of range");
  const end = b.indexOf(0, off);
  const v = b.toString("latin1", off, end < 0 ? Math.min(b.length, off + 256) : end).split(" ")[0];
  if (!/^[\x21-\x7e]{1,64}$/.test(v)) throw new Error("bzImage has no readable kernel version");
  return v;
}

export type InitrdFormat = "zstd" | "xz" | "gzip" | "cpio";

/** The compression of an initramfs file from its first bytes, or null when it is none the kernel unpacks. */
export function initrdFormat(head: Uint8Array): InitrdFormat | null {
  const hex = Buffer.from(head.subarray(0, 6)).toString("hex");
  if (hex.startsWith("28b52ffd")) return "zstd";
  if (hex.startsWith("fd377a585a00")) return "xz";
  if (hex.startsWith("1f8b")) return "gzip";
  if (Buffer.from(head.subarray(0, 6)).toString("latin1") === "070701") return "cpio";
  return null;
}

/** The files of a site directory (`airroot serve site-config`), sorted, as [name, bytes]; ca.pem is required. */
export function readSiteDir(dir: string): [string, Uint8Array][] {
  let names: string[];
  try { names = readdirSync(dir).sort(); } catch (e) {
    throw new MediaError("site", `cannot read the site directory ${dir} (${(e as Error).message}); make it with \`airroot serve site-config --state STATE --out ${dir}\``);
  }
  if (!names.includes("ca.pem")) throw new MediaError("site", `${dir} has no ca.pem: not a site directory; make it with \`airroot serve site-config --state STATE --out ${dir}\``);
  const out: [string, Uint8Array][] = [];
  for (const n of names) {
    const p = join(dir, n);
    if (!lstatSync(p).isFile()) throw new MediaError("site", `${p} is not a regular file (a site directory holds only files)`);
    out.push([n, readFileSync(p)]);
  }
  return out;
}

/** The https server URLs of a site's `servers` file, in order. */
export function siteServers(files: [string, Uint8Array][]): string[] {
  const f = files.find(([n]) => n === "servers");
  if (!f) return [];
  return new TextDecoder().decode(f[1]).split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
}

/** SHA-256 fingerprint (AA:BB:...) and subject of the site CA. */
export function caFingerprint(pem: Uint8Array): { sha256: string; subject: string } {
  const c = new X509Certificate(Buffer.from(pem));
  return { sha256: c.fingerprint256, subject: c.subject.replace(/\n/g, ", ") };
}

export interface Stage2Record { sha256: string; size: number; urlPath: string }

/** The site cpio: the site directory at /etc/airroot/site and, for a two-stage media, the stage-2 record. */
export function siteCpio(site: [string, Uint8Array][], stage2?: Stage2Record): Uint8Array {
  const a = new CpioArchive();
  a.add({ type: "dir", path: "etc/airroot", mode: 0o755 });
  a.add({ type: "dir", path: SITE_PATH, mode: 0o755 });
  for (const [name, data] of site) a.add({ type: "file", path: `${SITE_PATH}/${name}`, mode: 0o644, data });
  if (stage2) a.add({ type: "file", path: STAGE2_PATH, mode: 0o644, data: new TextEncoder().encode(`${stage2.sha256} ${stage2.size} ${stage2.urlPath}\n`) });
  return Buffer.concat(a.encode());
}

export function parseStage2(text: string): Stage2Record {
  const m = /^([0-9a-f]{64}) (\d+) (\/\S*)\n?$/.exec(text);
  if (!m) throw new Error(`${STAGE2_PATH} is not "SHA256 SIZE PATH"`);
  return { sha256: m[1], size: Number(m[2]), urlPath: m[3] };
}

export interface CpioFile { path: string; mode: number; data: Uint8Array }

/** Reads an uncompressed newc cpio (files, dirs, symlinks; bounded by its own length). */
export function readNewc(buf: Uint8Array): CpioFile[] {
  const out: CpioFile[] = [];
  const dec = new TextDecoder("latin1");
  let off = 0;
  const align = (n: number) => (n + 3) & ~3;
  while (off + 110 <= buf.length) {
    const h = dec.decode(buf.subarray(off, off + 110));
    if (!h.startsWith("070701") && !h.startsWith("070702")) throw new Error(`cpio: bad magic at offset ${off}`);
    const field = (i: number) => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const mode = field(1), size = field(6), nameSize = field(11);
    const nameStart = off + 110;
    const name = dec.decode(buf.subarray(nameStart, nameStart + nameSize - 1));
    const dataStart = align(nameStart + nameSize);
    if (dataStart + size > buf.length) throw new Error(`cpio: ${name} runs past the end`);
    if (name === "TRAILER!!!") break;
    out.push({ path: name, mode, data: buf.subarray(dataStart, dataStart + size) });
    off = align(dataStart + size);
  }
  return out;
}
