// FuseReplyWriter: whole frames written from shared memory on Bun's I/O pool, `drained()` only once every write
// is done (the mount closes the fd after it), nothing written after stop(), failures logged and never thrown.
// A FIFO stands in for /dev/fuse: the writer's contract (writev of a frame to an fd) is the same.
import { afterAll, expect, test } from "bun:test";
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { join } from "node:path";
import { FuseReplyWriter } from "../../src/fuse/writer";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";

afterAll(() => removeScratchDirs());

function fifo(): number {
  const path = join(scratchDir("airroot-writer-"), "fifo");
  if (Bun.spawnSync(["mkfifo", path]).exitCode !== 0) throw new Error("mkfifo failed");
  return openSync(path, "r+"); // read-write: opening never blocks, and we read back what was written
}

function readAll(fd: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let got = 0; got < n;) got += readSync(fd, out, got, n - got, null);
  return out;
}

test("frames from shared-memory views arrive whole with the bytes given; drained() waits for them", async () => {
  const fd = fifo();
  const log: string[] = [];
  const w = new FuseReplyWriter(fd, (l) => log.push(l));
  const shared = new Uint8Array(new SharedArrayBuffer(4096));
  for (let i = 0; i < shared.length; i++) shared[i] = (i * 7) & 255;
  const first = [Buffer.from("head"), shared.subarray(0, 1000), shared.subarray(3000)];
  const second = [shared.subarray(1000, 1010)];
  // Two pool threads may write concurrently, so the frames may land in either order (FUSE replies carry their
  // request's id: order never matters), but each lands whole (a FIFO write below PIPE_BUF is atomic, as is a
  // write to /dev/fuse).
  const writes = [w.write(first), w.write(second)];
  await w.drained();
  await Promise.all(writes);
  const got = readAll(fd, 4 + 1000 + 1096 + 10);
  const a = Buffer.concat([...first, ...second]), b = Buffer.concat([...second, ...first]);
  expect(got.equals(a) || got.equals(b)).toBe(true);
  expect(log).toEqual([]);
  closeSync(fd);
});

test("after stop() nothing more is written and writes resolve at once", async () => {
  const fd = fifo();
  const w = new FuseReplyWriter(fd, () => {});
  await w.write([Buffer.from("before")]);
  w.stop();
  await w.write([Buffer.from("after")]);
  await w.drained();
  writeSync(fd, "|"); // a marker written directly: the FIFO must hold exactly "before" ahead of it
  expect(readAll(fd, 7).toString()).toBe("before|");
  closeSync(fd);
});

test("a failed write is logged with its code, resolves, and the writer still drains", async () => {
  const fd = fifo();
  closeSync(fd); // the number is now invalid: EBADF
  const log: string[] = [];
  const w = new FuseReplyWriter(fd, (l) => log.push(l));
  await w.write([Buffer.from("x")]);
  await w.drained();
  expect(log).toEqual(["FUSE: writing a reply to /dev/fuse failed: EBADF"]);
});
