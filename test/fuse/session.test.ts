// Dispatch tests of the FUSE session without the kernel: request frames in, reply frames out.
import { describe, expect, test } from "bun:test";
import { Op, Errno, InitFlag, FOPEN_KEEP_CACHE } from "../../src/fuse/protocol";
import { Tree, type ExposedFile } from "../../src/fuse/tree";
import { capturedSession, readIn, u32s } from "../helpers/fuse-session";

const enc = new TextEncoder();
const cstr = (s: string) => enc.encode(s + "\0");
const setup = capturedSession;

const data = new Uint8Array(10000).map((_, i) => (i * 7) & 255);
const memFile = (name = "img", over: Partial<ExposedFile> = {}): ExposedFile => ({
  name, size: data.length, mtimeMs: 1_700_000_000_000, read: async (o, l) => data.slice(o, o + l), ...over,
});
const tick = () => new Promise((r) => setTimeout(r, 5));

describe("INIT", () => {
  test("negotiates flags, 1 MiB reads, max_background 64", async () => {
    const t = setup([memFile()]);
    t.init(45, InitFlag.ASYNC_READ | InitFlag.MAX_PAGES | InitFlag.SPLICE_READ | InitFlag.DO_READDIRPLUS);
    await t.s.ready;
    const v = new DataView(t.last().payload.buffer, t.last().payload.byteOffset);
    expect(t.last().error).toBe(0);
    expect([v.getUint32(0, true), v.getUint32(4, true)]).toEqual([7, 38]);
    expect(v.getUint32(12, true)).toBe(InitFlag.ASYNC_READ | InitFlag.MAX_PAGES | InitFlag.DO_READDIRPLUS);
    expect([v.getUint16(16, true), v.getUint16(18, true), v.getUint16(28, true)]).toEqual([64, 48, 256]);
    expect(t.s.stats()).toMatchObject({ negotiatedMaxRead: 1 << 20, negotiatedMaxBackground: 64, kernelProtocol: "7.45" });
  });
  test("without MAX_PAGES from the kernel, reads are capped at 128 KiB", async () => {
    const t = setup([memFile()]);
    t.init(38, InitFlag.ASYNC_READ);
    await t.s.ready;
    expect(t.s.stats().negotiatedMaxRead).toBe(128 * 1024);
  });
  test("a too-old protocol is refused with EPROTO and ready rejects", async () => {
    const t = setup([memFile()]);
    t.init(26);
    expect(t.last().error).toBe(-Errno.EPROTO);
    expect(t.s.ready).rejects.toThrow(/protocol 7.26/);
  });
  test("bad options are refused up front", () => {
    expect(() => setup([memFile()], { maxRead: 1000 })).toThrow(/maxRead/);
    expect(() => setup([memFile()], { maxBackground: 0 })).toThrow(/maxBackground/);
  });
});

describe("metadata ops", () => {
  test("LOOKUP, GETATTR, OPEN, OPENDIR, READDIR, STATFS, ACCESS, XATTR", async () => {
    const t = setup([memFile("a"), memFile("b")]);
    t.init();
    t.send(Op.LOOKUP, 1, cstr("b"));
    expect(t.last().error).toBe(0);
    expect(Number(new DataView(t.last().payload.buffer, t.last().payload.byteOffset).getBigUint64(0, true))).toBe(3);
    t.send(Op.LOOKUP, 1, cstr("missing"));
    expect(t.last().error).toBe(-Errno.ENOENT);
    t.send(Op.LOOKUP, 2, cstr("x"));
    expect(t.last().error).toBe(-Errno.ENOTDIR);
    t.send(Op.GETATTR, 2, new Uint8Array(16));
    expect(t.last().error).toBe(0);
    t.send(Op.GETATTR, 99, new Uint8Array(16));
    expect(t.last().error).toBe(-Errno.ENOENT);
    t.send(Op.OPEN, 2, u32s(0, 0));
    expect(t.last().error).toBe(0);
    expect(new DataView(t.last().payload.buffer, t.last().payload.byteOffset).getUint32(8, true) & FOPEN_KEEP_CACHE).toBeTruthy();
    t.send(Op.OPEN, 2, u32s(2, 0)); // O_RDWR
    expect(t.last().error).toBe(-Errno.EROFS);
    t.send(Op.OPEN, 1, u32s(0, 0));
    expect(t.last().error).toBe(-Errno.EISDIR);
    t.send(Op.OPENDIR, 2, u32s(0, 0));
    expect(t.last().error).toBe(-Errno.ENOTDIR);
    t.send(Op.OPENDIR, 1, u32s(0, 0));
    expect(t.last().error).toBe(0);
    t.send(Op.READDIR, 1, readIn(0, 4096));
    expect(new TextDecoder().decode(t.last().payload)).toContain("b");
    t.send(Op.READDIRPLUS, 2, readIn(0, 4096));
    expect(t.last().error).toBe(-Errno.ENOTDIR);
    t.send(Op.STATFS, 1);
    expect(t.last().payload.length).toBe(80);
    t.send(Op.ACCESS, 2, u32s(4, 0));
    expect(t.last().error).toBe(0);
    t.send(Op.ACCESS, 2, u32s(2, 0));
    expect(t.last().error).toBe(-Errno.EROFS);
    t.send(Op.GETXATTR, 2, new Uint8Array([...u32s(0, 0), ...cstr("security.capability")]));
    expect(t.last().error).toBe(-Errno.ENODATA);
    t.send(Op.LISTXATTR, 2, u32s(0, 0));
    expect(t.last().payload.length).toBe(8);
    t.send(Op.LISTXATTR, 2, u32s(100, 0));
    expect(t.last().payload.length).toBe(0);
    for (const op of [Op.RELEASE, Op.RELEASEDIR, Op.FLUSH]) {
      t.send(op, 2, new Uint8Array(24));
      expect(t.last().error).toBe(0);
    }
  });
  test("FORGET, BATCH_FORGET and INTERRUPT get no reply; DESTROY does", () => {
    const t = setup([memFile()]);
    t.init();
    const n = t.replies.length;
    t.send(Op.FORGET, 2, new Uint8Array(8));
    t.send(Op.BATCH_FORGET, 0, new Uint8Array([...u32s(1, 0), ...new Uint8Array(16)]));
    t.send(Op.INTERRUPT, 0, new Uint8Array(8));
    expect(t.replies.length).toBe(n);
    t.send(Op.DESTROY, 0);
    expect(t.last().error).toBe(0);
    expect(t.s.destroyed).toBe(true);
  });
  test("unknown opcodes and write ops get ENOSYS; malformed frames get EIO; headerless ones nothing", () => {
    const t = setup([memFile()]);
    t.init();
    for (const op of [Op.WRITE, Op.MKDIR, Op.SETXATTR, Op.CREATE, 4242]) {
      const u = t.send(op, 1, new Uint8Array(64));
      expect(t.last()).toMatchObject({ unique: u, error: -Errno.ENOSYS });
    }
    const u = t.send(Op.LOOKUP, 1, enc.encode("no-nul"));
    expect(t.last()).toMatchObject({ unique: u, error: -Errno.EIO });
    const n = t.replies.length;
    t.s.handleFrame(new Uint8Array(20));
    expect(t.replies.length).toBe(n);
  });
});

describe("READ", () => {
  test("returns exact bytes, clamps at EOF, empty past EOF", async () => {
    const t = setup([memFile()]);
    t.init();
    t.send(Op.READ, 2, readIn(100, 4096));
    await tick();
    expect(t.last().payload).toEqual(data.slice(100, 4196));
    t.send(Op.READ, 2, readIn(9000, 4096));
    await tick();
    expect(t.last().payload).toEqual(data.slice(9000));
    t.send(Op.READ, 2, readIn(20000, 4096));
    expect(t.last().payload.length).toBe(0);
    t.send(Op.READ, 1, readIn(0, 10));
    expect(t.last().error).toBe(-Errno.EISDIR);
  });
  test("errno from the file reaches the kernel; other failures become EIO", async () => {
    const cases: [ExposedFile["read"], number][] = [
      [async () => { throw Object.assign(new Error("source down"), { errno: 5 }); }, -5],
      [async () => { throw Object.assign(new Error("timeout"), { errno: 110 }); }, -110],
      [async () => { throw new Error("no errno"); }, -5],
      [async () => { throw Object.assign(new Error("bad errno"), { errno: -3 }); }, -5],
      [async () => { throw "a string"; }, -5],
      [() => { throw new Error("sync throw"); }, -5],
      [async () => new Uint8Array(10), -5], // short: must never be passed on as if it were EOF
      [async () => new Uint8Array(5000), -5], // long
      [async () => "not bytes" as any, -5],
    ];
    for (const [read, errno] of cases) {
      const logs: string[] = [];
      const t = setup([memFile("img", { read })], { log: (l: string) => logs.push(l) });
      t.init();
      const u = t.send(Op.READ, 2, readIn(0, 4096));
      await tick();
      expect(t.last()).toMatchObject({ unique: u, error: errno });
      expect(t.s.stats().readsInFlight).toBe(0);
      expect(logs.some((l) => l.includes("read of img at 0+4096 failed"))).toBe(true);
    }
  });
  test("reads complete out of order and are counted in flight", async () => {
    const waits: (() => void)[] = [];
    const t = setup([memFile("img", { read: (o, l) => new Promise((r) => waits.push(() => r(data.slice(o, o + l)))) })]);
    t.init();
    const us = [0, 1, 2, 3].map((i) => t.send(Op.READ, 2, readIn(i * 1000, 1000)));
    expect(t.s.stats()).toMatchObject({ readsInFlight: 4, maxReadsInFlight: 4 });
    waits[2]!(); waits[0]!(); waits[3]!(); waits[1]!();
    await tick();
    expect(t.replies.slice(-4).map((r) => r.unique)).toEqual([us[2], us[0], us[3], us[1]]);
    expect(t.replies.slice(-4).map((r) => r.payload[0])).toEqual([data[2000], data[0], data[3000], data[1000]]);
    expect(t.s.stats().readsInFlight).toBe(0);
  });
});

describe("Tree validation", () => {
  test("rejects bad names, sizes and duplicates", () => {
    const bad: Partial<ExposedFile>[] = [{ name: "" }, { name: "a/b" }, { name: ".." }, { name: "x".repeat(256) },
      { size: -1 }, { size: 1.5 }, { mtimeMs: NaN }, { read: undefined as any }];
    for (const b of bad) expect(() => new Tree([memFile("ok", b)])).toThrow(/FUSE tree/);
    expect(() => new Tree([memFile("a"), memFile("a")])).toThrow(/listed twice/);
  });
});
