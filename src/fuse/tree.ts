// A read-only, flat directory of files: the mount root (node 1) and one node per exposed file.
import { type Attr, type DirEntry } from "./codec.ts";
import { FUSE_ROOT_ID, S_IFDIR, S_IFREG, DT_DIR, DT_REG } from "./protocol.ts";

/**
 * A read answered without a copy: byte views (e.g. of cached blocks) whose concatenation is the answer, and an
 * optional release() the session calls exactly once when it no longer needs them: right after the reply was written
 * (the kernel copies the bytes during the write), or when the answer is refused (wrong size). The views must stay
 * unchanged until then; the session never writes into them.
 */
export interface ReadViews {
  views: Uint8Array[];
  release?: () => void;
}

export interface ExposedFile {
  name: string;            // file name in the mount root
  size: number;            // bytes
  mtimeMs: number;
  /** Must resolve with exactly `length` bytes (fewer only at EOF), as one buffer or as views (ReadViews). Reject with
   *  an Error having numeric `errno` (e.g. 5 = EIO) to return that errno to the reader; any other rejection → EIO. */
  read(offset: number, length: number): Promise<Uint8Array | ReadViews>;
}

/** st_blksize hint: large, so tools that size their buffers by it read in big chunks. */
const BLKSIZE = 128 * 1024;
const MAX_NAME_BYTES = 255;

export class Tree {
  private readonly byName = new Map<string, number>();
  private readonly files: ExposedFile[];
  readonly rootAttr: Attr;
  private readonly attrs: Attr[];
  private readonly entries: DirEntry[];

  /** Validates the file list up front (names, sizes) and throws a descriptive Error on the first bad one. */
  constructor(files: ExposedFile[], opts: { uid?: number; gid?: number } = {}) {
    const uid = opts.uid ?? 0, gid = opts.gid ?? 0;
    this.files = files.slice();
    this.attrs = this.files.map((f, i) => {
      checkFile(f, i);
      if (this.byName.has(f.name)) throw new Error(`FUSE tree: file name "${f.name}" is listed twice; names must be unique`);
      this.byName.set(f.name, FUSE_ROOT_ID + 1 + i);
      return { ino: FUSE_ROOT_ID + 1 + i, size: f.size, blocks: Math.ceil(f.size / 512), mtimeMs: f.mtimeMs,
               mode: S_IFREG | 0o444, nlink: 1, uid, gid, blksize: BLKSIZE };
    });
    const newest = this.files.reduce((m, f) => Math.max(m, f.mtimeMs), 0);
    this.rootAttr = { ino: FUSE_ROOT_ID, size: 0, blocks: 0, mtimeMs: newest || Date.now(), mode: S_IFDIR | 0o555,
                      nlink: 2, uid, gid, blksize: BLKSIZE };
    this.entries = [
      { name: ".", ino: FUSE_ROOT_ID, type: DT_DIR, nodeid: 0, attr: null },
      { name: "..", ino: FUSE_ROOT_ID, type: DT_DIR, nodeid: 0, attr: null },
      ...this.attrs.map((a, i) => ({ name: this.files[i]!.name, ino: a.ino, type: DT_REG, nodeid: a.ino, attr: a })),
    ];
  }

  /** Node id of a name in the root, or undefined. */
  lookup(parent: number, name: string): number | undefined {
    return parent === FUSE_ROOT_ID ? this.byName.get(name) : undefined;
  }

  isDir(nodeid: number): boolean {
    return nodeid === FUSE_ROOT_ID;
  }

  /** Attributes of a node, or undefined for an unknown node id. */
  attr(nodeid: number): Attr | undefined {
    if (nodeid === FUSE_ROOT_ID) return this.rootAttr;
    return this.attrs[nodeid - FUSE_ROOT_ID - 1];
  }

  /** The file behind a node id, or undefined (root or unknown). */
  file(nodeid: number): ExposedFile | undefined {
    return this.files[nodeid - FUSE_ROOT_ID - 1];
  }

  /** Directory listing of the root including "." and "..". */
  dirEntries(): DirEntry[] {
    return this.entries;
  }

  get fileCount(): number {
    return this.files.length;
  }

  /** Total size in 4 KiB blocks, for statfs. */
  blocks4k(): number {
    return this.attrs.reduce((n, a) => n + Math.ceil(a.size / 4096), 0);
  }
}

function checkFile(f: ExposedFile, i: number): void {
  const what = `FUSE tree: file #${i} (${JSON.stringify(f?.name)})`;
  if (!f || typeof f.name !== "string") throw new Error(`${what}: name must be a string`);
  if (f.name === "" || f.name === "." || f.name === ".." || f.name.includes("/") || f.name.includes("\0"))
    throw new Error(`${what}: not a valid file name (no "/", NUL, "." or "..")`);
  if (Buffer.byteLength(f.name) > MAX_NAME_BYTES) throw new Error(`${what}: name longer than ${MAX_NAME_BYTES} bytes`);
  if (!Number.isSafeInteger(f.size) || f.size < 0) throw new Error(`${what}: size must be a non-negative integer, got ${f.size}`);
  if (!Number.isFinite(f.mtimeMs)) throw new Error(`${what}: mtimeMs must be a finite number`);
  if (typeof f.read !== "function") throw new Error(`${what}: read(offset, length) is missing`);
}
