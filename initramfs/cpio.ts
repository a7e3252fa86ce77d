// Encoder for the "newc" cpio format (the one the Linux kernel unpacks as an initramfs).

export type CpioEntry =
  | { type: "file"; path: string; mode?: number; data: Uint8Array }
  | { type: "dir"; path: string; mode?: number }
  | { type: "symlink"; path: string; target: string }
  | { type: "char" | "block"; path: string; mode?: number; major: number; minor: number };

const S_IFREG = 0o100000, S_IFDIR = 0o040000, S_IFLNK = 0o120000, S_IFCHR = 0o020000, S_IFBLK = 0o060000;
const MAX_U32 = 0xffffffff;
const TRAILER = "TRAILER!!!";

/** Normalises an archive path: no leading "/" or "./", no "." or ".." parts, not empty. */
export function archivePath(p: string): string {
  const parts = p.split("/").filter((s) => s !== "" && s !== ".");
  if (parts.length === 0) throw new Error(`cpio: empty path "${p}"`);
  if (parts.includes("..")) throw new Error(`cpio: path "${p}" contains ".."`);
  for (const s of parts) if (s.includes("\0")) throw new Error(`cpio: path "${p}" contains NUL`);
  return parts.join("/");
}

/**
 * Collects entries and encodes them. Parent directories are added automatically (mode 0755) because the kernel's
 * unpacker does not create them; adding the same path twice is an error unless both are identical directories.
 * Entries are written in insertion order with parents first; uid/gid are 0 and mtimes fixed for reproducible output.
 */
export class CpioArchive {
  private entries = new Map<string, CpioEntry>();
  private ino = 1;
  constructor(private readonly mtime = 0) {}

  add(e: CpioEntry): void {
    const path = archivePath(e.path);
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const have = this.entries.get(dir);
      if (!have) this.entries.set(dir, { type: "dir", path: dir, mode: 0o755 });
      else if (have.type !== "dir") throw new Error(`cpio: "${dir}" is a ${have.type}, cannot hold "${path}"`);
    }
    const have = this.entries.get(path);
    if (have) {
      if (have.type === "dir" && e.type === "dir") { if (e.mode !== undefined) have.mode = e.mode; return; }
      throw new Error(`cpio: "${path}" added twice`);
    }
    this.entries.set(path, { ...e, path } as CpioEntry);
  }

  has(path: string): boolean {
    return this.entries.has(archivePath(path));
  }

  get size(): number {
    return this.entries.size;
  }

  /** The archive as a list of chunks (concatenate or stream them). */
  encode(): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const e of this.entries.values()) out.push(...this.encodeEntry(e));
    out.push(...record({ name: TRAILER, ino: 0, mode: 0, nlink: 1, mtime: 0, data: new Uint8Array(0), rmaj: 0, rmin: 0 }));
    return out;
  }

  private encodeEntry(e: CpioEntry): Uint8Array[] {
    const ino = this.ino++;
    const base = { name: e.path, ino, mtime: this.mtime, rmaj: 0, rmin: 0 };
    switch (e.type) {
      case "file":
        return record({ ...base, mode: S_IFREG | ((e.mode ?? 0o644) & 0o7777), nlink: 1, data: e.data });
      case "dir":
        return record({ ...base, mode: S_IFDIR | ((e.mode ?? 0o755) & 0o7777), nlink: 2, data: new Uint8Array(0) });
      case "symlink":
        return record({ ...base, mode: S_IFLNK | 0o777, nlink: 1, data: new TextEncoder().encode(e.target) });
      case "char":
      case "block":
        return record({ ...base, mode: (e.type === "char" ? S_IFCHR : S_IFBLK) | ((e.mode ?? 0o600) & 0o7777), nlink: 1,
          data: new Uint8Array(0), rmaj: e.major, rmin: e.minor });
    }
  }
}

interface Rec { name: string; ino: number; mode: number; nlink: number; mtime: number; data: Uint8Array; rmaj: number; rmin: number }

const hex8 = (n: number, what: string): string => {
  if (!Number.isInteger(n) || n < 0 || n > MAX_U32) throw new Error(`cpio: ${what} ${n} does not fit in 32 bits`);
  return n.toString(16).padStart(8, "0");
};
const pad4 = (n: number) => (4 - (n % 4)) % 4;

function record(r: Rec): Uint8Array[] {
  const name = new TextEncoder().encode(r.name + "\0");
  const header = "070701" + [r.ino, r.mode, 0, 0, r.nlink, r.mtime, r.data.length, 0, 0, r.rmaj, r.rmin, name.length, 0]
    .map((n, i) => hex8(n, ["ino", "mode", "uid", "gid", "nlink", "mtime", "size", "major", "minor", "rmajor", "rminor", "namesize", "check"][i]))
    .join("");
  const head = new Uint8Array(110 + name.length + pad4(110 + name.length));
  head.set(new TextEncoder().encode(header), 0);
  head.set(name, 110);
  const chunks: Uint8Array[] = [head];
  if (r.data.length > 0) {
    chunks.push(r.data);
    const p = pad4(r.data.length);
    if (p) chunks.push(new Uint8Array(p));
  }
  return chunks;
}
