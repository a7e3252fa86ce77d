// The fetch thread (src/source/fetch-thread.ts): range GETs run on a Worker against a real nginx on loopback. Shared
// blocks are filled in place, unshared ones get a copy, a crashed thread turns into source faults and is replaced,
// and a closed thread refuses work.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { freePort } from "../helpers/ports";
import { FetchThread } from "../../src/source/fetch-thread";
import { SourceFault, type PieceAllocator } from "../../src/source/http";
import { parseImageUrl } from "../../src/source/url";

const KiB = 1024;
const T = { stallMs: 5000, requestMs: 20_000 };
let ng: Nginx, data: Buffer, ca: Buffer, url: ReturnType<typeof parseImageUrl>;

beforeAll(async () => {
  const dir = scratchDir();
  const pki = makeTestPki(join(dir, "pki"));
  ca = readFileSync(pki.caCert);
  data = Buffer.from(crypto.getRandomValues(new Uint8Array(1024 * KiB)));
  writeFileSync(join(dir, "img.bin"), data);
  const port = await freePort("127.0.0.2");
  ng = await startNginx({ root: dir, listen: [{ host: "127.0.0.2", port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng") });
  url = parseImageUrl(ng.urlFor("img.bin"));
}, 60_000);

afterAll(async () => { await ng?.stop(); removeScratchDirs(); });

/** An allocator handing out the given kind of buffers and recording what it gave and got back. */
function allocator(shared: boolean) {
  const taken: Uint8Array[] = [], released: Uint8Array[] = [];
  const a: PieceAllocator = {
    take: (n) => { const b = shared ? new Uint8Array(new SharedArrayBuffer(n)) : new Uint8Array(n); taken.push(b); return b; },
    release: (b) => { released.push(b); },
  };
  return { a, taken, released };
}

test("shared blocks are filled in place; unshared ones receive a copy; no allocator gets the thread's bytes", async () => {
  const th = new FetchThread([url], { ca, connections: 2, connectTimeoutMs: 5000 }, () => {});
  try {
    const f = th.fetcher(0);
    const sh = allocator(true);
    const r = await f.get(100_000, 300 * KiB, T, undefined, 128 * KiB, sh.a);
    expect(r.parts.length).toBe(3);
    expect(r.parts.every((p, i) => p === sh.taken[i])).toBe(true); // the very blocks taken, in order
    expect(Buffer.concat(r.parts).equals(data.subarray(100_000, 100_000 + 300 * KiB))).toBe(true);
    expect(r.size).toBe(data.length);

    const un = allocator(false);
    const r2 = await f.get(5, 200 * KiB, T, undefined, 128 * KiB, un.a);
    expect(Buffer.concat(r2.parts).equals(data.subarray(5, 5 + 200 * KiB))).toBe(true);
    expect(un.released.length).toBe(2); // the first, unshareable blocks went back; the copy landed in fresh ones

    const r3 = await f.get(0, 1, T);
    expect(Buffer.from(r3.parts[0]).equals(data.subarray(0, 1))).toBe(true);
  } finally {
    await th.close();
  }
});

test("a fault on the thread is a SourceFault, and the blocks go back to the allocator", async () => {
  const th = new FetchThread([url], { ca, connections: 2, connectTimeoutMs: 5000 }, () => {});
  try {
    const sh = allocator(true);
    // Past the end: nginx answers 416, never a 206 for these bytes.
    const err = await th.fetcher(0).get(data.length + 10, 128 * KiB, T, undefined, 128 * KiB, sh.a).catch((e) => e);
    expect(err).toBeInstanceOf(SourceFault);
    expect(err.reason).toMatch(/HTTP 416/);
    expect(sh.released).toEqual(sh.taken);
  } finally {
    await th.close();
  }
});

test("a crashed thread fails its requests as source faults, then a new one serves", async () => {
  const lines: string[] = [];
  const th = new FetchThread([url], { ca, connections: 2, connectTimeoutMs: 5000 }, (l) => lines.push(l));
  try {
    await th.fetcher(0).get(0, 1, T); // thread up
    // A server index the thread does not know makes its message handler throw: the Worker's uncaught error.
    const err = await th.fetcher(7).get(0, 1, T).catch((e) => e);
    expect(err).toBeInstanceOf(SourceFault);
    expect(err.reason).toMatch(/fetch thread crashed/);
    expect(lines).toEqual([expect.stringMatching(/^fetch thread crashed \(TypeError: .*\); starting a new one$/)]);
    const r = await th.fetcher(0).get(4096, 4096, T);
    expect(Buffer.from(r.parts[0]).equals(data.subarray(4096, 8192))).toBe(true);
  } finally {
    await th.close();
  }
});

test("after close, requests are refused at once", async () => {
  const th = new FetchThread([url], { ca, connections: 2, connectTimeoutMs: 5000 }, () => {});
  await th.fetcher(0).get(0, 1, T);
  await th.close();
  await th.close(); // idempotent
  const err = await th.fetcher(0).get(0, 1, T).catch((e) => e);
  expect(err).toBeInstanceOf(SourceFault);
  expect(err.reason).toBe("connection pool closed");
});

test("a Worker's error report is cut down to the error line for logs", async () => {
  const { workerErrorText } = await import("../../src/util/worker-error");
  expect(workerErrorText({ message: "25 |   f.get(\n       ^\nTypeError: undefined is not an object (evaluating 'f.get')\n      at <anonymous> (x.ts:25:3)\n" }))
    .toBe("TypeError: undefined is not an object (evaluating 'f.get')");
  expect(workerErrorText({ message: "something odd\nmore" })).toBe("something odd");
  expect(workerErrorText(undefined)).toBe("unknown error");
});

test("RemoteImage with fetchThread: false fetches in the calling thread, same bytes", async () => {
  const { RemoteImage } = await import("../../src/source/image");
  const { memoryLogger } = await import("../../src/util/log");
  const img = await RemoteImage.open([url.href], { ca, fetchThread: false, log: memoryLogger() });
  try {
    expect((img as unknown as { fetchThread?: unknown }).fetchThread).toBeUndefined();
    const got = await img.read(300_000, 500 * KiB);
    expect(Buffer.from(got).equals(data.subarray(300_000, 300_000 + 500 * KiB))).toBe(true);
  } finally {
    await img.close();
  }
});
