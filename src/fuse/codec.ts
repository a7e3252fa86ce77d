// Pure FUSE frame codec: decodes request frames from /dev/fuse and encodes reply frames. No I/O.
import { Op, Size, Errno, opName } from "./protocol.ts";

export interface RequestHeader {
  len: number;
  opcode: number;
  /** Echoed verbatim in the reply; kept as bigint so no value is ever rounded. */
  unique: bigint;
  /** Node ids we hand out are small integers; anything beyond 2^53 decodes to -1 (unknown node). */
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
}

/** READ, READDIR and READDIRPLUS share fuse_read_in. */
export type ReadRequest = { op: "READ" | "READDIR" | "READDIRPLUS"; h: RequestHeader; fh: bigint; offset: number; size: number };
export type InitRequest = { op: "INIT"; h: RequestHeader; major: number; minor: number; maxReadahead: number; flags: number; flags2: number };

export type Request =
  | InitRequest
  | { op: "LOOKUP"; h: RequestHeader; name: string }
  | { op: "FORGET"; h: RequestHeader; nlookup: bigint }
  | { op: "BATCH_FORGET"; h: RequestHeader; forgets: { nodeid: number; nlookup: bigint }[] }
  | { op: "GETATTR"; h: RequestHeader; flags: number; fh: bigint }
  | { op: "OPEN" | "OPENDIR"; h: RequestHeader; flags: number }
  | ReadRequest
  | { op: "RELEASE" | "RELEASEDIR"; h: RequestHeader; fh: bigint; flags: number }
  | { op: "FLUSH"; h: RequestHeader; fh: bigint }
  | { op: "STATFS" | "DESTROY"; h: RequestHeader }
  | { op: "ACCESS"; h: RequestHeader; mask: number }
  | { op: "INTERRUPT"; h: RequestHeader; target: bigint }
  | { op: "GETXATTR"; h: RequestHeader; size: number; name: string }
  | { op: "LISTXATTR"; h: RequestHeader; size: number }
  /** Any opcode we do not implement: the session answers ENOSYS. */
  | { op: "UNSUPPORTED"; h: RequestHeader; opcode: number };

/**
 * Result of decoding one frame. A frame whose header could be read but whose body is malformed yields
 * `ok: false` with the header, so the session can still answer `errno` (the kernel waits for a reply);
 * `h` is undefined only when not even the header is usable.
 */
export type Decoded =
  | { ok: true; req: Request }
  | { ok: false; h?: RequestHeader; errno: number; reason: string };

// Fatal: a name with invalid UTF-8 must not decode to U+FFFD and then match a different file.
const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads a u64 as a number; values beyond 2^53 (never valid offsets or node ids for us) become -1. */
function u64num(v: DataView, off: number): number {
  const hi = v.getUint32(off + 4, true), lo = v.getUint32(off, true);
  if (hi >= 0x200000) return -1;
  return hi * 0x1_0000_0000 + lo;
}

/** A NUL-terminated UTF-8 string starting at `off`; null when the NUL is missing, "bad" for invalid UTF-8. */
function cstringAt(b: Uint8Array, off: number, end: number): { s: string; next: number } | null | "bad" {
  const nul = b.subarray(off, end).indexOf(0);
  if (nul < 0) return null;
  try {
    return { s: utf8.decode(b.subarray(off, off + nul)), next: off + nul + 1 };
  } catch {
    return "bad";
  }
}

export function decodeHeader(frame: Uint8Array): RequestHeader | null {
  if (frame.length < Size.IN_HEADER) return null;
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return {
    len: v.getUint32(0, true),
    opcode: v.getUint32(4, true),
    unique: v.getBigUint64(8, true),
    nodeid: u64num(v, 16),
    uid: v.getUint32(24, true),
    gid: v.getUint32(28, true),
    pid: v.getUint32(32, true),
  };
}

/** Decodes one request frame exactly as read() from /dev/fuse returned it. Never throws. */
export function decodeRequest(frame: Uint8Array): Decoded {
  try {
    return decodeUnchecked(frame);
  } catch (e) {
    // Defensive: every access below is bounds-checked first, so this is only a last line against a decoder bug.
    const h = decodeHeader(frame) ?? undefined;
    return { ok: false, h, errno: Errno.EIO, reason: `decoder error: ${(e as Error).message}` };
  }
}

function decodeUnchecked(frame: Uint8Array): Decoded {
  const h = decodeHeader(frame);
  if (!h) return { ok: false, errno: Errno.EIO, reason: `short frame: ${frame.length} bytes, header needs ${Size.IN_HEADER}` };
  const bad = (reason: string): Decoded => ({ ok: false, h, errno: Errno.EIO, reason: `${opName(h.opcode)}: ${reason}` });
  if (h.len !== frame.length) return bad(`header says ${h.len} bytes but frame has ${frame.length}`);
  const body = frame.subarray(Size.IN_HEADER);
  const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const need = (n: number) => body.length >= n;
  const short = (n: number) => bad(`body is ${body.length} bytes, needs ${n}`);

  switch (h.opcode) {
    case Op.INIT: {
      if (!need(Size.INIT_IN_MIN)) return short(Size.INIT_IN_MIN);
      return { ok: true, req: { op: "INIT", h, major: v.getUint32(0, true), minor: v.getUint32(4, true),
        maxReadahead: v.getUint32(8, true), flags: v.getUint32(12, true), flags2: need(20) ? v.getUint32(16, true) : 0 } };
    }
    case Op.LOOKUP: {
      const s = cstringAt(body, 0, body.length);
      if (!s) return bad("name is not NUL-terminated");
      // Every exposed name is valid UTF-8, so such a name cannot exist here.
      if (s === "bad") return { ok: false, h, errno: Errno.ENOENT, reason: "LOOKUP: name is not valid UTF-8" };
      if (s.s.length === 0) return bad("empty name");
      return { ok: true, req: { op: "LOOKUP", h, name: s.s } };
    }
    case Op.FORGET:
      if (!need(Size.FORGET_IN)) return short(Size.FORGET_IN);
      return { ok: true, req: { op: "FORGET", h, nlookup: v.getBigUint64(0, true) } };
    case Op.BATCH_FORGET: {
      if (!need(Size.BATCH_FORGET_IN)) return short(Size.BATCH_FORGET_IN);
      const count = v.getUint32(0, true);
      const bytes = Size.BATCH_FORGET_IN + count * Size.FORGET_ONE;
      if (!need(bytes)) return bad(`count ${count} needs ${bytes} bytes, body has ${body.length}`);
      const forgets: { nodeid: number; nlookup: bigint }[] = [];
      for (let i = 0; i < count; i++) {
        const o = Size.BATCH_FORGET_IN + i * Size.FORGET_ONE;
        forgets.push({ nodeid: u64num(v, o), nlookup: v.getBigUint64(o + 8, true) });
      }
      return { ok: true, req: { op: "BATCH_FORGET", h, forgets } };
    }
    case Op.GETATTR:
      // Kernels always send fuse_getattr_in since 7.9; be lenient with an empty body all the same.
      if (body.length === 0) return { ok: true, req: { op: "GETATTR", h, flags: 0, fh: 0n } };
      if (!need(Size.GETATTR_IN)) return short(Size.GETATTR_IN);
      return { ok: true, req: { op: "GETATTR", h, flags: v.getUint32(0, true), fh: v.getBigUint64(8, true) } };
    case Op.OPEN:
    case Op.OPENDIR:
      if (!need(Size.OPEN_IN)) return short(Size.OPEN_IN);
      return { ok: true, req: { op: h.opcode === Op.OPEN ? "OPEN" : "OPENDIR", h, flags: v.getUint32(0, true) } };
    case Op.READ:
    case Op.READDIR:
    case Op.READDIRPLUS: {
      if (!need(Size.READ_IN)) return short(Size.READ_IN);
      const offset = u64num(v, 8);
      if (offset < 0) return { ok: false, h, errno: Errno.EINVAL, reason: `${opName(h.opcode)}: offset beyond 2^53` };
      const op = h.opcode === Op.READ ? "READ" : h.opcode === Op.READDIR ? "READDIR" : "READDIRPLUS";
      return { ok: true, req: { op, h, fh: v.getBigUint64(0, true), offset, size: v.getUint32(16, true) } };
    }
    case Op.RELEASE:
    case Op.RELEASEDIR:
      if (!need(Size.RELEASE_IN)) return short(Size.RELEASE_IN);
      return { ok: true, req: { op: h.opcode === Op.RELEASE ? "RELEASE" : "RELEASEDIR", h,
        fh: v.getBigUint64(0, true), flags: v.getUint32(8, true) } };
    case Op.FLUSH:
      if (!need(Size.FLUSH_IN)) return short(Size.FLUSH_IN);
      return { ok: true, req: { op: "FLUSH", h, fh: v.getBigUint64(0, true) } };
    case Op.STATFS:
      return { ok: true, req: { op: "STATFS", h } };
    case Op.DESTROY:
      return { ok: true, req: { op: "DESTROY", h } };
    case Op.ACCESS:
      if (!need(Size.ACCESS_IN)) return short(Size.ACCESS_IN);
      return { ok: true, req: { op: "ACCESS", h, mask: v.getUint32(0, true) } };
    case Op.INTERRUPT:
      if (!need(Size.INTERRUPT_IN)) return short(Size.INTERRUPT_IN);
      return { ok: true, req: { op: "INTERRUPT", h, target: v.getBigUint64(0, true) } };
    case Op.GETXATTR: {
      if (!need(Size.GETXATTR_IN)) return short(Size.GETXATTR_IN);
      const s = cstringAt(body, Size.GETXATTR_IN, body.length);
      if (!s) return bad("attribute name is not NUL-terminated");
      if (s === "bad") return { ok: false, h, errno: Errno.ENODATA, reason: "GETXATTR: name is not valid UTF-8" };
      return { ok: true, req: { op: "GETXATTR", h, size: v.getUint32(0, true), name: s.s } };
    }
    case Op.LISTXATTR:
      if (!need(Size.GETXATTR_IN)) return short(Size.GETXATTR_IN);
      return { ok: true, req: { op: "LISTXATTR", h, size: v.getUint32(0, true) } };
    default:
      return { ok: true, req: { op: "UNSUPPORTED", h, opcode: h.opcode } };
  }
}

// ---------------------------------------------------------------- replies

/** Attributes of one inode, as the kernel wants them in fuse_attr. */
export interface Attr {
  ino: number;
  size: number;
  blocks: number;
  mtimeMs: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  blksize: number;
}

/** Cache timeout in seconds (entry or attr). */
export interface Validity {
  entrySec: number;
  attrSec: number;
}

function outHeader(v: DataView, totalLen: number, error: number, unique: bigint): void {
  v.setUint32(0, totalLen, true);
  v.setInt32(4, error, true);
  v.setBigUint64(8, unique, true);
}

function setU64(v: DataView, off: number, n: number): void {
  v.setUint32(off, n % 0x1_0000_0000, true);
  v.setUint32(off + 4, Math.floor(n / 0x1_0000_0000), true);
}

/** A reply that carries only an error (errno > 0), or an empty success (errno 0). */
export function encodeError(unique: bigint, errno: number): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER);
  outHeader(new DataView(b.buffer), Size.OUT_HEADER, -errno, unique);
  return b;
}

/** Header for a success reply followed by `payloadLen` bytes sent separately (writev). */
export function encodeOkHeader(unique: bigint, payloadLen: number): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER);
  outHeader(new DataView(b.buffer), Size.OUT_HEADER + payloadLen, 0, unique);
  return b;
}

/** A whole success frame with the given payload (copied). */
export function encodeOk(unique: bigint, payload: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER + payload.length);
  outHeader(new DataView(b.buffer), b.length, 0, unique);
  b.set(payload, Size.OUT_HEADER);
  return b;
}

function writeAttr(v: DataView, off: number, a: Attr): void {
  const ms = Number.isFinite(a.mtimeMs) && a.mtimeMs > 0 ? a.mtimeMs : 0; // fuse_attr times are unsigned
  const sec = Math.floor(ms / 1000);
  const nsec = Math.min(999_999_999, Math.floor((ms - sec * 1000) * 1e6));
  setU64(v, off + 0, a.ino);
  setU64(v, off + 8, a.size);
  setU64(v, off + 16, a.blocks);
  for (const t of [24, 32, 40]) setU64(v, off + t, sec); // atime, mtime, ctime
  for (const t of [48, 52, 56]) v.setUint32(off + t, nsec, true);
  v.setUint32(off + 60, a.mode, true);
  v.setUint32(off + 64, a.nlink, true);
  v.setUint32(off + 68, a.uid, true);
  v.setUint32(off + 72, a.gid, true);
  v.setUint32(off + 76, 0, true); // rdev
  v.setUint32(off + 80, a.blksize, true);
  v.setUint32(off + 84, 0, true); // flags
}

function writeEntryOut(v: DataView, off: number, nodeid: number, a: Attr | null, t: Validity): void {
  setU64(v, off + 0, nodeid);
  setU64(v, off + 8, 0); // generation: node ids are never reused within a mount
  setU64(v, off + 16, a ? t.entrySec : 0);
  setU64(v, off + 24, a ? t.attrSec : 0);
  v.setUint32(off + 32, 0, true);
  v.setUint32(off + 36, 0, true);
  if (a) writeAttr(v, off + 40, a);
}

/** LOOKUP reply (fuse_entry_out). */
export function encodeEntry(unique: bigint, nodeid: number, a: Attr, t: Validity): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER + Size.ENTRY_OUT);
  const v = new DataView(b.buffer);
  outHeader(v, b.length, 0, unique);
  writeEntryOut(v, Size.OUT_HEADER, nodeid, a, t);
  return b;
}

/** GETATTR reply (fuse_attr_out). */
export function encodeAttr(unique: bigint, a: Attr, attrSec: number): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER + Size.ATTR_OUT);
  const v = new DataView(b.buffer);
  outHeader(v, b.length, 0, unique);
  setU64(v, 16, attrSec);
  writeAttr(v, 16 + 16, a);
  return b;
}

/** OPEN/OPENDIR reply (fuse_open_out). */
export function encodeOpen(unique: bigint, fh: number, openFlags: number): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER + Size.OPEN_OUT);
  const v = new DataView(b.buffer);
  outHeader(v, b.length, 0, unique);
  setU64(v, 16, fh);
  v.setUint32(24, openFlags, true);
  return b;
}

export interface StatfsOut {
  blocks: number;
  files: number;
  bsize: number;
  namelen: number;
}

/** STATFS reply (fuse_kstatfs): a read-only fs has nothing free. */
export function encodeStatfs(unique: bigint, s: StatfsOut): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER + Size.STATFS_OUT);
  const v = new DataView(b.buffer);
  outHeader(v, b.length, 0, unique);
  setU64(v, 16, s.blocks);
  setU64(v, 24, 0); // bfree
  setU64(v, 32, 0); // bavail
  setU64(v, 40, s.files);
  setU64(v, 48, 0); // ffree
  v.setUint32(56, s.bsize, true);
  v.setUint32(60, s.namelen, true);
  v.setUint32(64, s.bsize, true); // frsize
  return b;
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
}

/** INIT reply (fuse_init_out, 64 bytes). */
export function encodeInit(unique: bigint, o: InitOut): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER + Size.INIT_OUT);
  const v = new DataView(b.buffer);
  outHeader(v, b.length, 0, unique);
  const p = Size.OUT_HEADER;
  v.setUint32(p + 0, o.major, true);
  v.setUint32(p + 4, o.minor, true);
  v.setUint32(p + 8, o.maxReadahead, true);
  v.setUint32(p + 12, o.flags >>> 0, true);
  v.setUint16(p + 16, o.maxBackground, true);
  v.setUint16(p + 18, o.congestionThreshold, true);
  v.setUint32(p + 20, o.maxWrite, true);
  v.setUint32(p + 24, o.timeGran, true);
  v.setUint16(p + 28, o.maxPages, true);
  v.setUint16(p + 30, 0, true); // map_alignment
  v.setUint32(p + 32, 0, true); // flags2
  return b;
}

/** GETXATTR/LISTXATTR reply to a size probe (size 0 in the request): fuse_getxattr_out. */
export function encodeXattrSize(unique: bigint, size: number): Uint8Array {
  const b = new Uint8Array(Size.OUT_HEADER + Size.GETXATTR_OUT);
  const v = new DataView(b.buffer);
  outHeader(v, b.length, 0, unique);
  v.setUint32(16, size, true);
  return b;
}

export interface DirEntry {
  name: string;
  ino: number;
  type: number; // DT_*
  /** For READDIRPLUS: the node id and attributes to prime the kernel's caches; null for "." and "..". */
  nodeid: number;
  attr: Attr | null;
}

const enc = new TextEncoder();
const align8 = (n: number) => (n + 7) & ~7;

/**
 * READDIR / READDIRPLUS reply: entries from index `offset` on, as many whole records as fit in `maxSize`.
 * Each record's `off` is the index of the next entry, which the kernel hands back as the next offset.
 */
export function encodeDirents(unique: bigint, entries: DirEntry[], offset: number, maxSize: number,
                              plus: boolean, t: Validity): Uint8Array {
  const chunks: { e: DirEntry; name: Uint8Array; idx: number; recLen: number }[] = [];
  let total = 0;
  const fixed = (plus ? Size.ENTRY_OUT : 0) + Size.DIRENT_HEADER;
  for (let i = offset; i < entries.length; i++) {
    const name = enc.encode(entries[i]!.name);
    const recLen = align8(fixed + name.length);
    if (total + recLen > maxSize) break;
    chunks.push({ e: entries[i]!, name, idx: i, recLen });
    total += recLen;
  }
  const b = new Uint8Array(Size.OUT_HEADER + total);
  const v = new DataView(b.buffer);
  outHeader(v, b.length, 0, unique);
  let p = Size.OUT_HEADER;
  for (const c of chunks) {
    let d = p;
    if (plus) {
      writeEntryOut(v, p, c.e.attr ? c.e.nodeid : 0, c.e.attr, t);
      d = p + Size.ENTRY_OUT;
    }
    setU64(v, d, c.e.ino);
    setU64(v, d + 8, c.idx + 1);
    v.setUint32(d + 16, c.name.length, true);
    v.setUint32(d + 20, c.e.type, true);
    b.set(c.name, d + Size.DIRENT_HEADER);
    p += c.recLen;
  }
  return b;
}

// ---------------------------------------------------------------- request encoding (for tests and tools)

/** Builds a request frame as the kernel would: used by the codec tests and fuzzing. */
export function encodeRequest(opcode: number, unique: bigint, nodeid: number, body: Uint8Array = new Uint8Array(0),
                              ids: { uid?: number; gid?: number; pid?: number } = {}): Uint8Array {
  const b = new Uint8Array(Size.IN_HEADER + body.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, b.length, true);
  v.setUint32(4, opcode, true);
  v.setBigUint64(8, unique, true);
  setU64(v, 16, nodeid);
  v.setUint32(24, ids.uid ?? 0, true);
  v.setUint32(28, ids.gid ?? 0, true);
  v.setUint32(32, ids.pid ?? 0, true);
  b.set(body, Size.IN_HEADER);
  return b;
}

/** Reads a reply frame's header: used by tests. */
export function decodeReplyHeader(frame: Uint8Array): { len: number; error: number; unique: bigint } {
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return { len: v.getUint32(0, true), error: v.getInt32(4, true), unique: v.getBigUint64(8, true) };
}
