// serveImages: the server's static image handler, exercised over real HTTP with Bun.serve on loopback and curl.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { closeSync, ftruncateSync, mkdirSync, openSync, statSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { parseRange, serveImages, IMMUTABLE_CACHE_CONTROL } from "../../src/server/static";

const dir = join(scratchDir(), "images");
const data = new Uint8Array(300_000);
for (let i = 0, x = 3; i < data.length; i++) { x = (Math.imul(x, 1103515245) + 12345) >>> 0; data[i] = x >>> 24; }
const digest = createHash("sha256").update(data).digest("hex");
let server: ReturnType<typeof Bun.serve>;
let base = "";

beforeAll(() => {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${digest}.sfs`), data);
  writeFileSync(join(dir, `${digest}.manifest`), "manifest\n");
  writeFileSync(join(dir, "secret.key"), "never served");
  server = Bun.serve({
    hostname: "127.0.0.1", port: 0,
    fetch: async (req) => (await serveImages(req, dir)) ?? new Response("other route", { status: 418 }),
  });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(async () => { await server?.stop(true); removeScratchDirs(); });

interface CurlResult { status: number; headers: Record<string, string>; body: Uint8Array }
/** One request with the real curl; headers of the final response parsed, body kept as bytes. */
/** Async on purpose: the server runs in this process, a synchronous spawn would block it. */
async function curl(path: string, extra: string[] = []): Promise<CurlResult> {
  const hdr = join(dir, "..", `h-${Math.random().toString(36).slice(2)}`);
  const p = Bun.spawn(["curl", "-sS", "--max-time", "20", "--path-as-is", "-D", hdr, ...extra, `${base}${path}`], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).arrayBuffer(), new Response(p.stderr).text(), p.exited]);
  const r = { exitCode: p.exitCode, stdout: out, stderr: err };
  if (r.exitCode !== 0) throw new Error(`curl failed: ${r.stderr.toString()}`);
  const lines = require("node:fs").readFileSync(hdr, "utf8").split("\r\n");
  const status = Number(lines[0].split(" ")[1]);
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) { const i = l.indexOf(":"); if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
  return { status, headers, body: new Uint8Array(r.stdout) };
}

describe("serveImages over HTTP", () => {
  const img = () => `/images/${digest}.sfs`;

  test("GET: whole file with immutable caching, strong ETag = digest, Last-Modified", async () => {
    const r = await curl(img());
    expect(r.status).toBe(200);
    expect(Buffer.from(r.body).equals(Buffer.from(data))).toBe(true);
    expect(r.headers["etag"]).toBe(`"${digest}"`);
    expect(r.headers["cache-control"]).toBe(IMMUTABLE_CACHE_CONTROL);
    expect(r.headers["accept-ranges"]).toBe("bytes");
    expect(r.headers["content-length"]).toBe(String(data.length));
    expect(new Date(r.headers["last-modified"]).getTime()).toBe(Math.floor(statSync(join(dir, `${digest}.sfs`)).mtimeMs / 1000) * 1000);
    const m = await curl(`/images/${digest}.manifest`);
    expect(new TextDecoder().decode(m.body)).toBe("manifest\n");
    expect(m.headers["etag"]).toBe(`"${digest}.manifest"`);
  });

  test("HEAD: headers and length, no body", async () => {
    const r = await curl(img(), ["-I"]);
    expect(r.status).toBe(200);
    expect(r.headers["content-length"]).toBe(String(data.length));
    expect(r.body.length).toBeLessThan(1000); // with -I curl prints only the headers: no image bytes followed
    expect(new TextDecoder().decode(r.body).startsWith("HTTP/1.1 200")).toBe(true);
    const p = await curl(img(), ["-I", "-H", "Range: bytes=10-19"]);
    expect(p.status).toBe(206);
    expect(p.headers["content-length"]).toBe("10");
  });

  test("single ranges: closed, open-ended, suffix, clamped", async () => {
    const cases: [string, number, number][] = [["0-99", 0, 99], ["1000-", 1000, data.length - 1], ["-500", data.length - 500, data.length - 1],
      ["299990-400000", 299990, data.length - 1], ["-999999", 0, data.length - 1], ["5-5", 5, 5]];
    for (const [spec, a, b] of cases) {
      const r = await curl(img(), ["-H", `Range: bytes=${spec}`]);
      expect(r.status).toBe(206);
      expect(r.headers["content-range"]).toBe(`bytes ${a}-${b}/${data.length}`);
      expect(Buffer.from(r.body).equals(Buffer.from(data.subarray(a, b + 1)))).toBe(true);
    }
  });

  test("unsatisfiable → 416 with the size; multi-range and malformed → whole file", async () => {
    for (const spec of ["bytes=300000-", "bytes=999999-1000000", "bytes=-0"]) {
      const r = await curl(img(), ["-H", `Range: ${spec}`]);
      expect(r.status).toBe(416);
      expect(r.headers["content-range"]).toBe(`bytes */${data.length}`);
    }
    for (const spec of ["bytes=0-1,5-6", "bytes=5-1", "items=0-1", "bytes=abc", "bytes=-"]) {
      const r = await curl(img(), ["-H", `Range: ${spec}`]);
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(data.length);
    }
  });

  test("If-Range: a matching strong ETag or exact date keeps the range; anything else sends the whole file", async () => {
    const lm = (await curl(img(), ["-I"])).headers["last-modified"];
    const ok = [`"${digest}"`, lm];
    const stale = [`"${"0".repeat(64)}"`, `W/"${digest}"`, "Thu, 01 Jan 1970 00:00:00 GMT"];
    for (const v of ok) expect((await curl(img(), ["-H", "Range: bytes=0-9", "-H", `If-Range: ${v}`])).status).toBe(206);
    for (const v of stale) {
      const r = await curl(img(), ["-H", "Range: bytes=0-9", "-H", `If-Range: ${v}`]);
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(data.length);
    }
  });

  test("conditional GET: If-None-Match → 304", async () => {
    expect((await curl(img(), ["-H", `If-None-Match: "${digest}"`])).status).toBe(304);
    expect((await curl(img(), ["-H", `If-None-Match: "other"`])).status).toBe(200);
  });

  test("refuses traversal and anything that is not <sha256>.sfs|manifest; other paths are not its business", async () => {
    const bad = ["/images/secret.key", "/images/../images/secret.key", `/images/${digest.toUpperCase()}.sfs`, `/images/${digest}.sfs/`,
      `/images/${digest}%2esfs`, "/images/", `/images//${digest}.sfs`, `/images/${"a".repeat(64)}.sfs`,
      `/images/${digest}.sfs%00`, `/images/${digest}.tar`];
    for (const p of bad) expect([p, (await curl(p)).status]).toEqual([p, 404]);
    expect((await curl("/api/v1/self/config")).status).toBe(418); // null → the caller's router decides
    // curl --path-as-is sends the dots; the URL parser resolves them (%2e too) to a path outside /images/
    for (const p of ["/images/../keys/image.key", "/images/%2e%2e/secret.key"]) expect((await curl(p)).status).toBe(418);
    const post = await curl(img(), ["-X", "POST", "-d", "x"]);
    expect(post.status).toBe(405);
    expect(post.headers["allow"]).toBe("GET, HEAD");
  });

  test("refusals are reported for the audit log; a missing image is a plain 404", async () => {
    const seen: string[] = [];
    const audit = { onRefused: (why: string, path: string, method: string) => seen.push(`${method} ${path}: ${why}`) };
    expect((await serveImages(new Request("http://x/images/secret.key"), dir, audit))!.status).toBe(404);
    expect((await serveImages(new Request(`http://x/images/${digest}.sfs`, { method: "DELETE" }), dir, audit))!.status).toBe(405);
    expect((await serveImages(new Request(`http://x/images/${"d".repeat(64)}.sfs`), dir, audit))!.status).toBe(404);
    expect(seen).toEqual(["GET /images/secret.key: not an image name (<sha256>.sfs or .manifest)", `DELETE /images/${digest}.sfs: method not allowed`]);
  });

  test("streams large files without reading them into memory", async () => {
    const bigDigest = "b".repeat(64);
    const size = 512 * 1024 * 1024;
    const fd = openSync(join(dir, `${bigDigest}.sfs`), "w");
    ftruncateSync(fd, size); // sparse: no disk use
    closeSync(fd);
    Bun.gc(true);
    const before = process.memoryUsage().rss;
    // async curl: the server runs in this process and must keep serving while curl reads
    const p = Bun.spawn(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", `${base}/images/${bigDigest}.sfs`], { stdout: "pipe" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    expect(Number(out)).toBe(size);
    const grew = process.memoryUsage().rss - before;
    expect(grew).toBeLessThan(128 * 1024 * 1024);
  });
});

describe("parseRange (property test)", () => {
  test("every accepted range lies inside the file; garbage is ignored, never thrown", async () => {
    let seed = 7;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const alphabet = "bytes=-0123456789, ";
    for (let i = 0; i < 5000; i++) {
      const size = Math.floor(rnd() * 1000);
      const len = Math.floor(rnd() * 20);
      let h = rnd() < 0.5 ? "bytes=" : "";
      for (let k = 0; k < len; k++) h += alphabet[Math.floor(rnd() * alphabet.length)];
      const r = parseRange(h, size);
      if (r !== null && r !== "unsatisfiable") {
        expect(r.start).toBeGreaterThanOrEqual(0);
        expect(r.end).toBeGreaterThanOrEqual(r.start);
        expect(r.end).toBeLessThan(size);
      }
    }
    expect(parseRange("bytes=99999999999999999999-", 10)).toBeNull();
    expect(parseRange("bytes=0-" + "9".repeat(300), 10)).toBeNull();
  });
});

describe("serveImages (fuzz, in process)", () => {
  let seed = 4242;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const pick = <T,>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];

  test("random paths: only exact image names are served, nothing throws", async () => {
    const parts = ["images", "..", ".", "%2e", "%2f", "%00", digest, `${digest}.sfs`, `${digest}.manifest`, "secret.key", "", "a", "%", "\\"];
    for (let i = 0; i < 2000; i++) {
      const path = "/" + Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => pick(parts)).join(pick(["/", "", "//"]));
      let req: Request;
      try { req = new Request(`http://127.0.0.1${path}`); } catch { continue; } // not even a URL
      const res = await serveImages(req, dir);
      if (res === null) { expect(new URL(req.url).pathname.startsWith("/images/")).toBe(false); continue; }
      if (res.status === 200) expect(new URL(req.url).pathname).toMatch(/^\/images\/[0-9a-f]{64}\.(sfs|manifest)$/);
      else expect(res.status).toBe(404);
      await res.body?.cancel();
    }
  });

  test("random Range / If-Range headers: 206 bodies always match Content-Range and the file", async () => {
    const alphabet = ["bytes=", "-", ",", " ", "0", "1", "9", "299999", "300000", "150000", "x", "=", "\"", digest];
    for (let i = 0; i < 300; i++) {
      const range = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => pick(alphabet)).join("");
      const headers: Record<string, string> = { range: rnd() < 0.8 ? `bytes=${range.replace(/^bytes=/, "")}` : range };
      if (rnd() < 0.3) headers["if-range"] = pick([`"${digest}"`, `"nope"`, "W/\"x\"", "garbage"]);
      const res = (await serveImages(new Request(`http://127.0.0.1/images/${digest}.sfs`, { headers }), dir))!;
      expect([200, 206, 416]).toContain(res.status);
      const body = new Uint8Array(await res.arrayBuffer());
      if (res.status === 200) expect(body.length).toBe(data.length);
      if (res.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(res.headers.get("content-range") ?? "")!;
        expect(m).not.toBeNull();
        const [a, b] = [Number(m[1]), Number(m[2])];
        expect(Number(m[3])).toBe(data.length);
        expect(Buffer.from(body).equals(Buffer.from(data.subarray(a, b + 1)))).toBe(true);
      }
    }
  });
});
