// Unit tests of the FUSE frame codec: every op's decode and encode, malformed frames, and a bounded fuzz.
import { describe, expect, test } from "bun:test";
import * as codec from "../../src/fuse/codec";
import { Op, Size, Errno, S_IFREG, DT_REG, DT_DIR } from "../../src/fuse/protocol";

const U = 0x1234_5678_9abcn;

function body(fields: [("u32" | "u64" | "u16"), number | bigint][], tail: Uint8Array = new Uint8Array(0)): Uint8Array {
  const len = fields.reduce((n, [t]) => n + (t === "u64" ? 8 : t === "u32" ? 4 : 2), 0);
  const b = new Uint8Array(len + tail.length);
  const v = new DataView(b.buffer);
  let o = 0;
  for (const [t, x] of fields) {
    if (t === "u64") { v.setBigUint64(o, BigInt(x), true); o += 8; }
    else if (t === "u32") { v.setUint32(o, Number(x), true); o += 4; }
    else { v.setUint16(o, Number(x), true); o += 2; }
  }
  b.set(tail, o);
  return b;
}
const cstr = (s: string) => new TextEncoder().encode(s + "\0");

function dec(opcode: number, b?: Uint8Array, nodeid = 1) {
  const d = codec.decodeRequest(codec.encodeRequest(opcode, U, nodeid, b, { uid: 1000, gid: 100, pid: 42 }));
  if (!d.ok) throw new Error(`decode failed: ${d.reason}`);
  expect(d.req.h.unique).toBe(U);
  expect(d.req.h.nodeid).toBe(nodeid);
  expect([d.req.h.uid, d.req.h.gid, d.req.h.pid]).toEqual([1000, 100, 42]);
  return d.req as any;
}

describe("decode each request", () => {
  test("INIT (7.45 with flags2 and the 7.31 16-byte form)", () => {
    const r = dec(Op.INIT, body([["u32", 7], ["u32", 45], ["u32", 131072], ["u32", 0x1234], ["u32", 9]], new Uint8Array(44)));
    expect(r).toMatchObject({ op: "INIT", major: 7, minor: 45, maxReadahead: 131072, flags: 0x1234, flags2: 9 });
    const old = dec(Op.INIT, body([["u32", 7], ["u32", 31], ["u32", 4096], ["u32", 1]]));
    expect(old).toMatchObject({ op: "INIT", minor: 31, flags: 1, flags2: 0 });
  });
  test("LOOKUP with a UTF-8 name", () => {
    expect(dec(Op.LOOKUP, cstr("root-ü.squashfs"))).toMatchObject({ op: "LOOKUP", name: "root-ü.squashfs" });
  });
  test("FORGET and BATCH_FORGET", () => {
    expect(dec(Op.FORGET, body([["u64", 3]]), 2)).toMatchObject({ op: "FORGET", nlookup: 3n });
    const r = dec(Op.BATCH_FORGET, body([["u32", 2], ["u32", 0], ["u64", 2], ["u64", 5], ["u64", 3], ["u64", 1]]), 0);
    expect(r.forgets).toEqual([{ nodeid: 2, nlookup: 5n }, { nodeid: 3, nlookup: 1n }]);
  });
  test("GETATTR (with and without fuse_getattr_in)", () => {
    expect(dec(Op.GETATTR, body([["u32", 1], ["u32", 0], ["u64", 77]]))).toMatchObject({ op: "GETATTR", flags: 1, fh: 77n });
    expect(dec(Op.GETATTR)).toMatchObject({ op: "GETATTR", flags: 0, fh: 0n });
  });
  test("OPEN and OPENDIR", () => {
    expect(dec(Op.OPEN, body([["u32", 0o100000], ["u32", 0]]), 2)).toMatchObject({ op: "OPEN", flags: 0o100000 });
    expect(dec(Op.OPENDIR, body([["u32", 0], ["u32", 0]]))).toMatchObject({ op: "OPENDIR", flags: 0 });
  });
  test("READ, READDIR, READDIRPLUS share fuse_read_in", () => {
    const b = body([["u64", 9], ["u64", 5 * 2 ** 32 + 7], ["u32", 1 << 20], ["u32", 0], ["u64", 0], ["u32", 0], ["u32", 0]]);
    expect(b.length).toBe(Size.READ_IN);
    for (const [op, name] of [[Op.READ, "READ"], [Op.READDIR, "READDIR"], [Op.READDIRPLUS, "READDIRPLUS"]] as const)
      expect(dec(op, b, 2)).toMatchObject({ op: name, fh: 9n, offset: 5 * 2 ** 32 + 7, size: 1 << 20 });
  });
  test("RELEASE, RELEASEDIR, FLUSH", () => {
    const rel = body([["u64", 4], ["u32", 0x8000], ["u32", 0], ["u64", 0]]);
    expect(dec(Op.RELEASE, rel, 2)).toMatchObject({ op: "RELEASE", fh: 4n, flags: 0x8000 });
    expect(dec(Op.RELEASEDIR, rel)).toMatchObject({ op: "RELEASEDIR", fh: 4n });
    expect(dec(Op.FLUSH, body([["u64", 4], ["u32", 0], ["u32", 0], ["u64", 1]]), 2)).toMatchObject({ op: "FLUSH", fh: 4n });
  });
  test("STATFS, DESTROY, ACCESS, INTERRUPT", () => {
    expect(dec(Op.STATFS).op).toBe("STATFS");
    expect(dec(Op.DESTROY).op).toBe("DESTROY");
    expect(dec(Op.ACCESS, body([["u32", 4], ["u32", 0]]))).toMatchObject({ op: "ACCESS", mask: 4 });
    expect(dec(Op.INTERRUPT, body([["u64", 0xdeadbeefn]]), 0)).toMatchObject({ op: "INTERRUPT", target: 0xdeadbeefn });
  });
  test("GETXATTR and LISTXATTR", () => {
    expect(dec(Op.GETXATTR, body([["u32", 256], ["u32", 0]], cstr("security.selinux"))))
      .toMatchObject({ op: "GETXATTR", size: 256, name: "security.selinux" });
    expect(dec(Op.LISTXATTR, body([["u32", 0], ["u32", 0]]))).toMatchObject({ op: "LISTXATTR", size: 0 });
  });
  test("unknown and unimplemented opcodes decode as UNSUPPORTED", () => {
    for (const op of [Op.WRITE, Op.MKDIR, Op.SETATTR, Op.CREATE, Op.LSEEK, 999, 0xffffffff])
      expect(dec(op, new Uint8Array(16))).toMatchObject({ op: "UNSUPPORTED", opcode: op });
  });
  test("a node id beyond 2^53 decodes as -1 (unknown), unique stays exact", () => {
    const f = codec.encodeRequest(Op.GETATTR, 0xffff_ffff_ffff_fffen, 0, new Uint8Array(16));
    new DataView(f.buffer).setBigUint64(16, 0xffff_ffff_ffff_ffffn, true);
    const d = codec.decodeRequest(f);
    expect(d.ok && d.req.h.nodeid).toBe(-1);
    expect(d.ok && d.req.h.unique).toBe(0xffff_ffff_ffff_fffen);
  });
});

describe("malformed frames", () => {
  const bad = (f: Uint8Array) => {
    const d = codec.decodeRequest(f);
    if (d.ok) throw new Error("expected a decode failure");
    return d;
  };
  test("short header: no header, no reply possible", () => {
    for (const n of [0, 1, 16, 39]) {
      const d = bad(new Uint8Array(n));
      expect(d.h).toBeUndefined();
      expect(d.reason).toContain("short frame");
    }
  });
  test("length mismatch in either direction", () => {
    const f = codec.encodeRequest(Op.STATFS, U, 1);
    new DataView(f.buffer).setUint32(0, 41, true);
    expect(bad(f)).toMatchObject({ errno: Errno.EIO, h: { unique: U } });
    const g = codec.encodeRequest(Op.STATFS, U, 1, new Uint8Array(8));
    new DataView(g.buffer).setUint32(0, 40, true);
    expect(bad(g).reason).toContain("header says 40 bytes but frame has 48");
  });
  test("truncated bodies of every fixed-size op", () => {
    const sizes: [number, number][] = [[Op.INIT, 16], [Op.FORGET, 8], [Op.BATCH_FORGET, 8], [Op.GETATTR, 16],
      [Op.OPEN, 8], [Op.OPENDIR, 8], [Op.READ, 40], [Op.READDIR, 40], [Op.READDIRPLUS, 40], [Op.RELEASE, 24],
      [Op.RELEASEDIR, 24], [Op.FLUSH, 24], [Op.ACCESS, 8], [Op.INTERRUPT, 8], [Op.GETXATTR, 8], [Op.LISTXATTR, 8]];
    for (const [op, size] of sizes) {
      const d = bad(codec.encodeRequest(op, U, 1, new Uint8Array(size - 1 || 1).subarray(0, size - 1)));
      if (op !== Op.GETATTR || size - 1 > 0) expect(d.h?.unique).toBe(U);
      expect(d.errno).toBe(Errno.EIO);
    }
  });
  test("names without NUL, and empty names", () => {
    expect(bad(codec.encodeRequest(Op.LOOKUP, U, 1, new TextEncoder().encode("abc"))).reason).toContain("NUL");
    expect(bad(codec.encodeRequest(Op.LOOKUP, U, 1, new Uint8Array(0))).reason).toContain("NUL");
    expect(bad(codec.encodeRequest(Op.LOOKUP, U, 1, new Uint8Array(1))).reason).toContain("empty name");
    expect(bad(codec.encodeRequest(Op.GETXATTR, U, 1, body([["u32", 0], ["u32", 0]], new Uint8Array([65, 66]))))
      .reason).toContain("NUL");
  });
  test("names that are not valid UTF-8 never decode to a replacement character", () => {
    const name = new Uint8Array([0x61, 0xff, 0]);
    expect(bad(codec.encodeRequest(Op.LOOKUP, U, 1, name))).toMatchObject({ errno: Errno.ENOENT, h: { unique: U } });
    expect(bad(codec.encodeRequest(Op.GETXATTR, U, 1, body([["u32", 0], ["u32", 0]], name))).errno).toBe(Errno.ENODATA);
  });
  test("BATCH_FORGET whose count exceeds the body", () => {
    expect(bad(codec.encodeRequest(Op.BATCH_FORGET, U, 0, body([["u32", 1000], ["u32", 0], ["u64", 2], ["u64", 1]])))
      .reason).toContain("count 1000");
  });
  test("READ offset beyond 2^53 is EINVAL", () => {
    const b = body([["u64", 0], ["u64", 2n ** 60n], ["u32", 4096], ["u32", 0], ["u64", 0], ["u32", 0], ["u32", 0]]);
    expect(bad(codec.encodeRequest(Op.READ, U, 2, b)).errno).toBe(Errno.EINVAL);
  });
});

test("fuzz: random and truncated frames never throw out of the decoder (bounded)", () => {
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const valid = [
    codec.encodeRequest(Op.INIT, 1n, 0, body([["u32", 7], ["u32", 38], ["u32", 0], ["u32", 0]], new Uint8Array(48))),
    codec.encodeRequest(Op.LOOKUP, 2n, 1, cstr("file")),
    codec.encodeRequest(Op.READ, 3n, 2, new Uint8Array(40)),
    codec.encodeRequest(Op.BATCH_FORGET, 4n, 0, body([["u32", 2], ["u32", 0], ["u64", 2], ["u64", 1], ["u64", 3], ["u64", 1]])),
    codec.encodeRequest(Op.GETXATTR, 5n, 1, body([["u32", 0], ["u32", 0]], cstr("user.x"))),
  ];
  const opcodes = Object.values(Op);
  let oks = 0, fails = 0;
  for (let i = 0; i < 20000; i++) {
    let f: Uint8Array;
    const kind = i % 4;
    if (kind === 0) {
      f = new Uint8Array(Math.floor(rnd() * 200));
      for (let j = 0; j < f.length; j++) f[j] = Math.floor(rnd() * 256);
    } else if (kind === 1) {
      const v = valid[i % valid.length]!;
      f = v.slice(0, Math.floor(rnd() * (v.length + 1)));
    } else {
      // well-formed header with a random opcode and random body, length right or wrong
      const b = new Uint8Array(Math.floor(rnd() * 120));
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(rnd() * 256);
      f = codec.encodeRequest(opcodes[Math.floor(rnd() * opcodes.length)]!, BigInt(i), Math.floor(rnd() * 5), b);
      if (kind === 3) for (let k = 0; k < 3; k++) f[Math.floor(rnd() * f.length)] = Math.floor(rnd() * 256);
    }
    const d = codec.decodeRequest(f); // must not throw
    if (d.ok) oks++; else { fails++; expect(typeof d.reason).toBe("string"); expect(d.errno).toBeGreaterThan(0); }
  }
  expect(oks).toBeGreaterThan(100);
  expect(fails).toBeGreaterThan(100);
});

describe("encode replies", () => {
  const attr: codec.Attr = { ino: 2, size: 3 * 2 ** 32 + 5, blocks: 99, mtimeMs: 1_700_000_000_123.5, mode: S_IFREG | 0o444,
                             nlink: 1, uid: 0, gid: 0, blksize: 131072 };
  const ttl = { entrySec: 86400, attrSec: 3600 };
  const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u64 = (v: DataView, o: number) => Number(v.getBigUint64(o, true));

  function checkAttr(v: DataView, o: number) {
    expect(u64(v, o)).toBe(2);
    expect(u64(v, o + 8)).toBe(attr.size);
    expect(u64(v, o + 16)).toBe(99);
    expect(u64(v, o + 32)).toBe(1_700_000_000);
    expect(v.getUint32(o + 52, true)).toBe(123_500_000);
    expect(v.getUint32(o + 60, true)).toBe(S_IFREG | 0o444);
    expect(v.getUint32(o + 64, true)).toBe(1);
    expect(v.getUint32(o + 80, true)).toBe(131072);
  }

  test("error and empty replies", () => {
    const e = codec.encodeError(U, Errno.ENOSYS);
    expect(codec.decodeReplyHeader(e)).toEqual({ len: 16, error: -38, unique: U });
    expect(codec.decodeReplyHeader(codec.encodeOk(U))).toEqual({ len: 16, error: 0, unique: U });
    expect(codec.decodeReplyHeader(codec.encodeOkHeader(U, 1 << 20))).toEqual({ len: 16 + (1 << 20), error: 0, unique: U });
  });
  test("entry (LOOKUP)", () => {
    const b = codec.encodeEntry(U, 2, attr, ttl);
    expect(b.length).toBe(16 + Size.ENTRY_OUT);
    const v = view(b);
    expect(codec.decodeReplyHeader(b).len).toBe(b.length);
    expect([u64(v, 16), u64(v, 24), u64(v, 32), u64(v, 40)]).toEqual([2, 0, 86400, 3600]);
    checkAttr(v, 16 + 40);
  });
  test("attr (GETATTR)", () => {
    const b = codec.encodeAttr(U, attr, 3600);
    expect(b.length).toBe(16 + Size.ATTR_OUT);
    expect(u64(view(b), 16)).toBe(3600);
    checkAttr(view(b), 32);
  });
  test("negative or bogus mtime never produces garbage times", () => {
    const b = codec.encodeAttr(U, { ...attr, mtimeMs: -5 }, 1);
    expect(u64(view(b), 32 + 32)).toBe(0);
    const c = codec.encodeAttr(U, { ...attr, mtimeMs: NaN }, 1);
    expect(u64(view(c), 32 + 32)).toBe(0);
  });
  test("open", () => {
    const b = codec.encodeOpen(U, 7, 2);
    expect(b.length).toBe(32);
    expect([u64(view(b), 16), view(b).getUint32(24, true)]).toEqual([7, 2]);
  });
  test("statfs", () => {
    const b = codec.encodeStatfs(U, { blocks: 1000, files: 3, bsize: 4096, namelen: 255 });
    const v = view(b);
    expect(b.length).toBe(16 + 80);
    expect([u64(v, 16), u64(v, 24), u64(v, 32), u64(v, 40), u64(v, 48)]).toEqual([1000, 0, 0, 3, 0]);
    expect([v.getUint32(56, true), v.getUint32(60, true), v.getUint32(64, true)]).toEqual([4096, 255, 4096]);
  });
  test("init", () => {
    const b = codec.encodeInit(U, { major: 7, minor: 38, maxReadahead: 131072, flags: 0x80400001, maxBackground: 64,
                                    congestionThreshold: 48, maxWrite: 4096, timeGran: 1, maxPages: 256 });
    const v = view(b);
    expect(b.length).toBe(16 + 64);
    expect([v.getUint32(16, true), v.getUint32(20, true), v.getUint32(24, true), v.getUint32(28, true)])
      .toEqual([7, 38, 131072, 0x80400001]);
    expect([v.getUint16(32, true), v.getUint16(34, true), v.getUint32(36, true), v.getUint32(40, true), v.getUint16(44, true)])
      .toEqual([64, 48, 4096, 1, 256]);
  });
  test("xattr size", () => {
    const b = codec.encodeXattrSize(U, 0);
    expect(b.length).toBe(24);
    expect(view(b).getUint32(16, true)).toBe(0);
  });

  const entries: codec.DirEntry[] = [
    { name: ".", ino: 1, type: DT_DIR, nodeid: 0, attr: null },
    { name: "..", ino: 1, type: DT_DIR, nodeid: 0, attr: null },
    { name: "image.squashfs", ino: 2, type: DT_REG, nodeid: 2, attr },
  ];
  function parseDirents(b: Uint8Array, plus: boolean) {
    const v = view(b);
    const out: { name: string; ino: number; off: number; type: number; nodeid?: number }[] = [];
    let p = 16;
    while (p < b.length) {
      const e = plus ? { nodeid: u64(v, p) } : {};
      const d = plus ? p + Size.ENTRY_OUT : p;
      const namelen = v.getUint32(d + 16, true);
      out.push({ ...e, ino: u64(v, d), off: u64(v, d + 8), type: v.getUint32(d + 20, true),
                 name: new TextDecoder().decode(b.subarray(d + 24, d + 24 + namelen)) });
      p += (((plus ? Size.ENTRY_OUT : 0) + 24 + namelen + 7) & ~7);
    }
    expect(p).toBe(b.length);
    return out;
  }
  test("readdir: all entries, offsets, 8-byte alignment, resume from offset, size limit", () => {
    const all = parseDirents(codec.encodeDirents(U, entries, 0, 4096, false, ttl), false);
    expect(all.map((e) => [e.name, e.off, e.type])).toEqual([[".", 1, DT_DIR], ["..", 2, DT_DIR], ["image.squashfs", 3, DT_REG]]);
    expect(parseDirents(codec.encodeDirents(U, entries, 2, 4096, false, ttl), false).map((e) => e.name)).toEqual(["image.squashfs"]);
    expect(codec.encodeDirents(U, entries, 3, 4096, false, ttl).length).toBe(16); // end of directory
    expect(parseDirents(codec.encodeDirents(U, entries, 0, 64, false, ttl), false).length).toBe(2); // 32+32 fit
    expect(parseDirents(codec.encodeDirents(U, entries, 0, 63, false, ttl), false).length).toBe(1); // only whole records
    expect(codec.encodeDirents(U, entries, 0, 10, false, ttl).length).toBe(16);
  });
  test("readdirplus carries entry_out (zero node id for . and ..)", () => {
    const b = codec.encodeDirents(U, entries, 0, 4096, true, ttl);
    const all = parseDirents(b, true);
    expect(all.map((e) => [e.name, e.nodeid, e.off])).toEqual([[".", 0, 1], ["..", 0, 2], ["image.squashfs", 2, 3]]);
    checkAttr(view(b), 16 + 2 * 160 + 40); // "." and ".." records are 153/154 bytes, padded to 160
  });
});
