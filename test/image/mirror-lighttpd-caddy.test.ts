// `serve mirror-config lighttpd` and `serve mirror-config caddy` run by the real servers on loopback: the URLs, byte
// ranges, caching and errors of airroot serve; Caddy with the digest ETag (so it agrees with airroot serve and nginx
// without a manifest), lighttpd with no validator (used only with the manifest); neither listens anywhere else (no :80,
// no admin endpoint, no UDP). The range engine reads the image through them next to nginx and airroot serve.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { removeScratchDirs } from "../helpers/tmp";
import type { TestPki } from "../helpers/pki";
import { freePort } from "../helpers/ports";
import { packedImage } from "../helpers/packed-image";
import { socketsOf } from "../helpers/sockets";
import { startLighttpd, type Lighttpd } from "../helpers/lighttpd";
import { startCaddy, type Caddy } from "../helpers/caddy";
import { startNginxSite } from "../helpers/nginx-site";
import type { PackResult } from "../../src/image/pack";
import { readImagePublicKey } from "../../src/image/keys";
import { imagesDir } from "../../src/image/paths";
import { loadManifest } from "../../src/image/manifest";
import { manifestVerifier } from "../../src/image/verify";
import { mirrorConfig } from "../../src/server/mirror";
import { serveImages, IMMUTABLE_CACHE_CONTROL } from "../../src/server/static";
import { RemoteImage } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";

setDefaultTimeout(60_000);

let base = "", pki: TestPki, packed: PackResult, state = "";
const stops: (() => Promise<void> | void)[] = [];
const url = { lighttpd: "", caddy: "", nginx: "", airroot: "" };
const port = { lighttpd: 0, caddy: 0 };
let lighttpd: Lighttpd, caddy: Caddy;

beforeAll(async () => {
  ({ base, pki, state, packed } = await packedImage(2 * 1024 * 1024 + 999));
  const tls = { cert: pki.serverCert, key: pki.serverKey };
  [port.lighttpd, port.caddy] = [await freePort("127.0.0.2"), await freePort("127.0.0.3")];
  const [pn, ps] = [await freePort("127.0.0.4"), await freePort("127.0.0.5")];
  lighttpd = await startLighttpd({ workDir: join(base, "lighttpd"), listen: { host: "127.0.0.2", port: port.lighttpd },
    siteConfig: mirrorConfig("lighttpd", { stateDir: state, listen: [`127.0.0.2:${port.lighttpd}`], ...tls }) });
  stops.push(() => lighttpd.stop());
  caddy = await startCaddy({ workDir: join(base, "caddy"), waitFor: [{ host: "127.0.0.3", port: port.caddy }],
    caddyfile: mirrorConfig("caddy", { stateDir: state, listen: [`127.0.0.3:${port.caddy}`], urlPath: "/mirror/images/", ...tls }) });
  stops.push(() => caddy.stop());
  const nginx = await startNginxSite({ workDir: join(base, "nginx"), waitFor: [{ host: "127.0.0.4", port: pn }],
    siteConfig: mirrorConfig("nginx", { stateDir: state, listen: [`127.0.0.4:${pn}`], ...tls }) });
  stops.push(() => nginx.stop());
  const own = Bun.serve({ hostname: "127.0.0.5", port: ps, tls: { cert: Bun.file(pki.serverCert), key: Bun.file(pki.serverKey) },
    fetch: async (req) => (await serveImages(req, imagesDir(state))) ?? new Response("not found\n", { status: 404 }) });
  stops.push(() => own.stop(true));
  const img = `images/${packed.digest}.sfs`;
  url.lighttpd = `https://127.0.0.2:${port.lighttpd}/${img}`;
  url.caddy = `https://127.0.0.3:${port.caddy}/mirror/${img}`; // --root /mirror/images/
  url.nginx = `https://127.0.0.4:${pn}/${img}`;
  url.airroot = `https://127.0.0.5:${ps}/${img}`;
});

afterAll(async () => {
  for (const s of stops.splice(0).reverse()) { try { await s(); } catch { /* keep stopping the others */ } }
  removeScratchDirs();
});

interface Reply { status: number; headers: Record<string, string | undefined>; body: Uint8Array }
async function curl(u: string, extra: string[] = []): Promise<Reply> {
  const hdr = join(base, `h-${Math.random().toString(36).slice(2)}`);
  // HTTP/1.1, as nodes speak it (both servers would offer HTTP/2 to curl).
  const p = Bun.spawn(["curl", "-sS", "--http1.1", "--max-time", "20", "--cacert", pki.caCert, "-D", hdr, ...extra, u], { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(p.stdout).arrayBuffer(), new Response(p.stderr).text(), p.exited]);
  if (p.exitCode !== 0) throw new Error(`curl ${u} failed: ${err}`);
  const lines = readFileSync(hdr, "utf8").split("\r\n");
  const headers: Record<string, string | undefined> = {};
  for (const l of lines.slice(1)) { const i = l.indexOf(":"); if (i > 0) headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim(); }
  return { status: Number(lines[0].split(" ")[1]), headers, body: new Uint8Array(out) };
}
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("lighttpd and Caddy mirrors serve what airroot serve does", () => {
  for (const which of ["lighttpd", "caddy"] as const) {
    test(`${which}: whole file, ranges, 416, HEAD, manifest, caching only on success, 404/403 elsewhere`, async () => {
      const u = url[which];
      const tag = which === "caddy" ? `"${packed.digest}"` : undefined; // lighttpd cannot send the digest: no tag at all
      const caching = which === "caddy" ? IMMUTABLE_CACHE_CONTROL : "max-age=31536000";
      const full = await curl(u);
      expect(full.status).toBe(200);
      expect(sha(full.body)).toBe(packed.digest);
      expect(full.headers["etag"]).toBe(tag);
      if (which === "lighttpd") expect(full.headers["last-modified"]).toBeUndefined();
      expect(full.headers["cache-control"]).toBe(caching);
      expect(full.headers["accept-ranges"]).toBe("bytes");
      expect(full.headers["content-type"]).toBe("application/octet-stream");
      expect(full.headers["x-content-type-options"]).toBe("nosniff");
      const r = await curl(u, ["-H", "Range: bytes=1048570-1048590"]);
      expect(r.status).toBe(206);
      expect(r.headers["content-range"]).toBe(`bytes 1048570-1048590/${packed.size}`);
      expect(r.headers["etag"]).toBe(tag);
      expect(r.headers["cache-control"]).toBe(caching);
      expect(Buffer.from(r.body).equals(full.body.subarray(1048570, 1048591))).toBe(true);
      const suffix = await curl(u, ["-H", "Range: bytes=-10"]);
      expect(Buffer.from(suffix.body).equals(full.body.subarray(packed.size - 10))).toBe(true);
      const past = await curl(u, ["-H", `Range: bytes=${packed.size}-`]);
      expect(past.status).toBe(416);
      // RFC 9110 says SHOULD; lighttpd 1.4.69, like Apache 2.4, omits it on 416
      if (which === "caddy") expect(past.headers["content-range"]).toBe(`bytes */${packed.size}`);
      const head = await curl(u, ["-I"]);
      expect(head.status).toBe(200);
      expect(head.headers["content-length"]).toBe(String(packed.size));
      const m = await curl(u.replace(/\.sfs$/, ".manifest"));
      expect(m.status).toBe(200);
      expect(m.headers["etag"]).toBe(tag && `"${packed.digest}.manifest"`);
      loadManifest(m.body, readImagePublicKey(state), { expectDigest: packed.digest });
      const missing = await curl(u.replace(packed.digest, "0".repeat(64)));
      expect(missing.status).toBe(404);
      expect(missing.headers["cache-control"]).toBeUndefined(); // a not-yet-copied image must not be cached
      for (const p of ["/images/", "/images/airroot.db", `/images/${packed.digest.toUpperCase()}.sfs`, "/keys/image.key", "/airroot.db", "/"]) {
        const x = await curl(u.replace(/\/images\/.*$/, p));
        expect([p, x.status === 404 || x.status === 403]).toEqual([p, true]);
        expect(x.headers["cache-control"]).toBeUndefined();
      }
      const post = await curl(u, ["-X", "POST", "-d", "x"]);
      expect(post.status).toBeGreaterThanOrEqual(403);
      expect(post.body.length).toBeLessThan(2000);
    });
  }

  test("If-Range: Caddy honours the digest and sends the whole file for a stale tag; lighttpd (no tag) always sends the whole file", async () => {
    const ifr = ["-H", "Range: bytes=0-9", "-H", `If-Range: "${packed.digest}"`];
    const stale = ["-H", "Range: bytes=0-9", "-H", `If-Range: "${"0".repeat(64)}"`];
    expect((await curl(url.caddy, ifr)).status).toBe(206);
    expect((await curl(url.caddy.replace(/\.sfs$/, ".manifest"), ["-H", "Range: bytes=0-9", "-H", `If-Range: "${packed.digest}.manifest"`])).status).toBe(206);
    for (const u of [url.caddy, url.lighttpd]) {
      const s = await curl(u, stale);
      expect([u, s.status, s.body.length]).toEqual([u, 200, packed.size]);
    }
    expect((await curl(url.lighttpd, ifr)).body.length).toBe(packed.size); // safe: never a range for an unproven tag
  });

  test("each listens on its one loopback address only: no :80, no admin endpoint, no UDP (HTTP/3)", () => {
    for (const [pid, host, p] of [[caddy.proc.pid, "127.0.0.3", port.caddy], [lighttpd.proc.pid, "127.0.0.2", port.lighttpd]] as const) {
      const socks = socketsOf(pid);
      expect(socks.filter((s) => s.proto.startsWith("udp"))).toEqual([]);
      expect(socks.filter((s) => s.listening).map((s) => `${s.address}:${s.port}`)).toEqual([`${host}:${p}`]);
    }
  });
});

describe("the range engine over lighttpd, Caddy, nginx and airroot serve", () => {
  const opts = (manifest: boolean) => ({ ca: readFileSync(pki.caCert), log: memoryLogger(), probeIntervalMs: 60_000, ioTimeoutMs: 20_000,
    verifier: manifest ? manifestVerifier(packed.manifest) : undefined });
  async function readAll(img: RemoteImage): Promise<Uint8Array> {
    const out = new Uint8Array(img.size);
    for (let off = 0; off < img.size; off += 256 * 1024) out.set(await img.read(off, 256 * 1024), off);
    return out;
  }

  test("with the manifest all four are used; every byte through Caddy, then through lighttpd, is right", async () => {
    for (const first of [url.caddy, url.lighttpd]) {
      const img = await RemoteImage.open([first, url.nginx, url.airroot, first === url.caddy ? url.lighttpd : url.caddy], opts(true));
      try {
        expect(img.validator).toBe(`"${packed.digest}"`);
        expect(sha(await readAll(img))).toBe(packed.digest);
        const st = img.status().sources;
        expect(st.map((s) => s.state)).toEqual(["healthy", "healthy", "healthy", "healthy"]);
        expect(st[0].bytes).toBe(packed.size); // listed first: it served every byte, each chunk verified
      } finally { await img.close(); }
    }
  });

  test("without a manifest Caddy agrees with nginx and airroot serve on the digest ETag; lighttpd is excluded with the reason", async () => {
    const img = await RemoteImage.open([url.caddy, url.lighttpd, url.nginx, url.airroot], opts(false));
    try {
      expect(sha(await readAll(img))).toBe(packed.digest);
      const st = img.status().sources;
      expect(st.map((s) => s.state)).toEqual(["healthy", "excluded", "healthy", "healthy"]);
      expect(st[1].reason).toMatch(/^sends neither an ETag nor a Last-Modified header, so nothing proves it serves the same file/);
      expect(st[0].bytes).toBe(packed.size);
    } finally { await img.close(); }
  });
});
