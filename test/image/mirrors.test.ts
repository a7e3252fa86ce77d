// A packed image served by airroot's own handler, stock nginx and stock Apache httpd (configs from mirror-config),
// read through the range engine with the manifest verifier; a mirror with a corrupted chunk is detected.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";

setDefaultTimeout(60_000); // real servers and TLS on a shared 2-core machine
import { join } from "node:path";
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { freePort } from "../helpers/ports";
import { startApache, type Apache } from "../helpers/apache";
import { startNginxSite, type NginxSite } from "../helpers/nginx-site";
import { makeTree } from "./tree";
import { openDatabase } from "../../src/server/store/db";
import { packImage, type PackResult } from "../../src/image/pack";
import { readImagePublicKey } from "../../src/image/keys";
import { imagesDir, imageFile, manifestFile } from "../../src/image/paths";
import { loadManifest, type Manifest } from "../../src/image/manifest";
import { manifestVerifier } from "../../src/image/verify";
import { mirrorConfig } from "../../src/server/mirror";
import { serveImages, IMMUTABLE_CACHE_CONTROL } from "../../src/server/static";
import { RemoteImage, IoError } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";

let base = "", pki: TestPki, packed: PackResult, badChunk = 2;
const servers: { stop(): Promise<void> | void }[] = [];
const url: Record<"airroot" | "nginx" | "apache" | "bad", string> = { airroot: "", nginx: "", apache: "", bad: "" };
let nginx: NginxSite, apache: Apache, apacheBad: Apache;

beforeAll(async () => {
  base = scratchDir();
  chmodSync(base, 0o755); // Apache's workers run as www-data and must reach the images
  pki = makeTestPki(join(base, "pki"));
  const state = join(base, "state");
  mkdirSync(state, { mode: 0o755 });
  const db = await openDatabase(state);
  packed = await packImage({ rootDir: makeTree(join(base, "root"), "", 5 * 1024 * 1024 + 777), profile: "compute", stateDir: state, db });
  await db.close();
  expect(packed.manifest.chunks.length).toBeGreaterThan(badChunk);

  // A mirror whose copy has one flipped byte in one chunk: same name, same size, same ETag (name-derived).
  const badState = join(base, "bad");
  mkdirSync(imagesDir(badState), { recursive: true, mode: 0o755 });
  chmodSync(badState, 0o755);
  const bytes = readFileSync(imageFile(state, packed.digest));
  bytes[badChunk * packed.manifest.chunkSize + 4242] ^= 0x40;
  writeFileSync(imageFile(badState, packed.digest), bytes, { mode: 0o644 });
  copyFileSync(manifestFile(state, packed.digest), manifestFile(badState, packed.digest));
  chmodSync(manifestFile(badState, packed.digest), 0o644);
  chmodSync(pki.serverKey, 0o644); // read by the servers' parents (root) only, but keep it simple for the test

  const [pn, pa, pb, ps] = [await freePort("127.0.0.2"), await freePort("127.0.0.3"), await freePort("127.0.0.5"), await freePort("127.0.0.4")];
  const tls = { cert: pki.serverCert, key: pki.serverKey };
  nginx = await startNginxSite({
    workDir: join(base, "nginx"), waitFor: [{ host: "127.0.0.2", port: pn }],
    siteConfig: mirrorConfig("nginx", { stateDir: state, listen: [`127.0.0.2:${pn}`], ...tls }),
  });
  servers.push(nginx);
  apache = await startApache({
    workDir: join(base, "apache"), waitFor: [{ host: "127.0.0.3", port: pa }],
    siteConfig: mirrorConfig("apache", { stateDir: state, listen: [`127.0.0.3:${pa}`], urlPath: "/mirror/images/", ...tls }),
  });
  servers.push(apache);
  apacheBad = await startApache({
    workDir: join(base, "apache-bad"), waitFor: [{ host: "127.0.0.5", port: pb }],
    siteConfig: mirrorConfig("apache", { stateDir: badState, listen: [`127.0.0.5:${pb}`], ...tls }),
  });
  servers.push(apacheBad);
  const own = Bun.serve({
    hostname: "127.0.0.4", port: ps,
    tls: { cert: Bun.file(pki.serverCert), key: Bun.file(pki.serverKey) },
    fetch: async (req) => (await serveImages(req, imagesDir(state))) ?? new Response("not found\n", { status: 404 }),
  });
  servers.push({ stop: () => own.stop(true) });
  const img = `images/${packed.digest}.sfs`;
  url.nginx = `https://127.0.0.2:${pn}/${img}`;
  url.apache = `https://127.0.0.3:${pa}/mirror/${img}`; // --root /mirror/images/
  url.bad = `https://127.0.0.5:${pb}/${img}`;
  url.airroot = `https://127.0.0.4:${ps}/${img}`;
});

afterAll(async () => {
  for (const s of servers.splice(0).reverse()) { try { await s.stop(); } catch { /* keep stopping the others */ } }
  removeScratchDirs();
});

interface Reply { status: number; headers: Record<string, string>; body: Uint8Array }
async function curl(u: string, extra: string[] = []): Promise<Reply> {
  const hdr = join(base, `h-${Math.random().toString(36).slice(2)}`);
  const p = Bun.spawn(["curl", "-sS", "--max-time", "20", "--cacert", pki.caCert, "-D", hdr, ...extra, u], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).arrayBuffer(), new Response(p.stderr).text(), p.exited]);
  if (p.exitCode !== 0) throw new Error(`curl ${u} failed: ${err}`);
  const lines = readFileSync(hdr, "utf8").split("\r\n");
  const headers: Record<string, string> = {};
  for (const l of lines.slice(1)) { const i = l.indexOf(":"); if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
  return { status: Number(lines[0].split(" ")[1]), headers, body: new Uint8Array(out) };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("airroot serve, nginx and Apache mirrors agree", () => {
  for (const which of ["airroot", "nginx", "apache"] as const) {
    test(`${which}: whole file, ETag = digest, immutable, ranges, 416, 404`, async () => {
      const u = url[which];
      const full = await curl(u);
      expect(full.status).toBe(200);
      expect(sha(full.body)).toBe(packed.digest);
      expect(full.headers["etag"]).toBe(`"${packed.digest}"`);
      expect(full.headers["cache-control"]).toBe(IMMUTABLE_CACHE_CONTROL);
      expect(full.headers["accept-ranges"]).toBe("bytes");
      expect(full.headers["content-type"]).toBe("application/octet-stream");
      const r = await curl(u, ["-H", "Range: bytes=1048570-1048590"]);
      expect(r.status).toBe(206);
      expect(r.headers["content-range"]).toBe(`bytes 1048570-1048590/${packed.size}`);
      expect(r.headers["etag"]).toBe(`"${packed.digest}"`);
      expect(Buffer.from(r.body).equals(full.body.subarray(1048570, 1048591))).toBe(true);
      const suffix = await curl(u, ["-H", "Range: bytes=-10"]);
      expect(Buffer.from(suffix.body).equals(full.body.subarray(packed.size - 10))).toBe(true);
      const past = await curl(u, ["-H", `Range: bytes=${packed.size}-`]);
      expect(past.status).toBe(416);
      // RFC 9110 says SHOULD; Apache 2.4 omits it on 416
      if (which !== "apache") expect(past.headers["content-range"]).toBe(`bytes */${packed.size}`);
      const head = await curl(u, ["-I"]);
      expect(head.status).toBe(200);
      expect(head.headers["content-length"]).toBe(String(packed.size));
      const m = await curl(u.replace(/\.sfs$/, ".manifest"));
      expect(m.status).toBe(200);
      expect(m.headers["etag"]).toBe(`"${packed.digest}.manifest"`);
      loadManifest(m.body, readImagePublicKey(join(base, "state")), { expectDigest: packed.digest });
      for (const p of ["/images/", "/images/airroot.db", `/images/${packed.digest.toUpperCase()}.sfs`, "/keys/image.key", "/airroot.db", "/"]) {
        const x = await curl(u.replace(/\/images\/.*$/, p));
        expect([p, x.status === 404 || x.status === 403]).toEqual([p, true]);
        expect(x.headers["cache-control"]).toBeUndefined(); // errors are never cached as immutable
      }
      const post = await curl(u, ["-X", "POST", "-d", "x"]);
      expect(post.status).toBeGreaterThanOrEqual(403);
      expect(post.body.length).toBeLessThan(2000);
    });
  }

  test("all three honour If-Range with the digest ETag and send the whole file for a stale one", async () => {
    const ifr = ["-H", "Range: bytes=0-9", "-H", `If-Range: "${packed.digest}"`];
    const stale = ["-H", "Range: bytes=0-9", "-H", `If-Range: "${"0".repeat(64)}"`];
    for (const u of [url.apache, url.airroot, url.nginx]) {
      expect([u, (await curl(u, ifr)).status]).toEqual([u, 206]);
      const s = await curl(u, stale);
      expect([u, s.status, s.body.length]).toEqual([u, 200, packed.size]);
    }
  });
});

describe("range engine with the manifest verifier", () => {
  let manifest: Manifest;
  beforeAll(async () => {
    const res = await fetch(url.nginx.replace(/\.sfs$/, ".manifest"), { tls: { ca: readFileSync(pki.caCert, "utf8") } } as RequestInit);
    manifest = loadManifest(new Uint8Array(await res.arrayBuffer()), readImagePublicKey(join(base, "state")), { expectDigest: packed.digest });
  });
  const opts = () => ({ ca: readFileSync(pki.caCert), verifier: manifestVerifier(manifest), log: memoryLogger(), probeIntervalMs: 60_000,
    ioTimeoutMs: 20_000 }); // bounded: a regression must fail the test, not hang it

  async function readAll(img: RemoteImage): Promise<Uint8Array> {
    const out = new Uint8Array(img.size);
    for (let off = 0; off < img.size; off += 256 * 1024) out.set(await img.read(off, 256 * 1024), off);
    return out;
  }

  test("reads the image from airroot serve, nginx and Apache together; every source agrees", async () => {
    const img = await RemoteImage.open([url.airroot, url.nginx, url.apache], { ...opts(), order: "spread" });
    try {
      expect(img.size).toBe(manifest.size);
      expect(img.validator).toBe(`"${packed.digest}"`);
      expect(sha(await readAll(img))).toBe(packed.digest);
      expect(img.status().sources.map((s) => s.state)).toEqual(["healthy", "healthy", "healthy"]);
    } finally { await img.close(); }
  });

  test("a mirror with a corrupted chunk is detected and the chunk is read from another", async () => {
    const log = memoryLogger();
    const img = await RemoteImage.open([url.bad, url.nginx], { ...opts(), log, order: "listed" });
    try {
      const data = await readAll(img);
      expect(sha(data)).toBe(packed.digest);
      const bad = img.status().sources[0];
      expect(bad.errors).toBeGreaterThan(0);
      expect(bad.lastError).toMatch(new RegExp(`chunk ${badChunk} failed verification`));
      expect(log.lines.some((l) => l.includes(url.bad) && l.includes("verification"))).toBe(true);
    } finally { await img.close(); }
  });

  test("no good copy anywhere: EIO for that chunk, never wrong bytes; good chunks still read", async () => {
    const img = await RemoteImage.open([url.bad], { ...opts(), ioTimeoutMs: 1500 });
    try {
      const cs = manifest.chunkSize;
      expect(sha(await img.read(0, cs))).toBe(manifest.chunks[0]);
      const err = await img.read(badChunk * cs, 4096).then(() => null, (e) => e);
      expect(err).toBeInstanceOf(IoError);
      expect((err as IoError).errno).toBe(5);
    } finally { await img.close(); }
  });
});
