// Every small document a node fetches (the signed manifest, in `airroot mount` and in the boot path) is size-capped
// as bytes arrive and never follows a redirect. No real server sends an endless chunked body or redirects an image
// URL to plain http on its own, so a small node:https server does both here (a mock for those faults only).
import { afterAll, beforeAll, expect, test } from "bun:test";
import https from "node:https";
import type { Socket } from "node:net";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { fetchBounded, BoundedFetchError } from "../../src/util/boundedfetch";
import { loadImageVerifier } from "../../src/mount/verify";
import { fetchVerifiedManifest } from "../../src/boot/rootsource";
import { memoryLogger } from "../../src/util/log";

let srv: https.Server, base = "", ca = "";
let sentByEndless = 0;
const sockets = new Set<Socket>();
const MiB = 1 << 20;

beforeAll(async () => {
  const pki = makeTestPki(join(scratchDir(), "pki"));
  ca = readFileSync(pki.caCert, "utf8");
  srv = https.createServer({ cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) }, (req, res) => {
    if (req.url === "/endless") {
      // Chunked, no Content-Length, never ends: only the reader's own cap stops it.
      res.writeHead(200, { "content-type": "application/octet-stream" });
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      const pump = () => { while (!res.destroyed && sentByEndless < 512 * MiB && res.write(chunk)) sentByEndless += chunk.length; };
      res.on("drain", pump);
      pump();
    } else if (req.url === "/lies") {
      res.writeHead(200, { "content-length": String(200 * MiB) }); res.end("x");
    } else if (req.url === "/redirect-http") {
      res.writeHead(302, { location: "http://127.0.0.1:1/m" }); res.end();
    } else if (req.url === "/redirect-https") {
      res.writeHead(301, { location: `${base}/small` }); res.end();
    } else if (req.url === "/stall") {
      res.writeHead(200, { "content-length": "100" }); res.write("only part");
    } else { res.writeHead(200, { "content-length": "5" }); res.end("small"); }
  });
  srv.on("connection", (s: Socket) => { sockets.add(s); s.on("close", () => sockets.delete(s)); });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  base = `https://127.0.0.1:${(srv.address() as { port: number }).port}`;
}, 30_000);
afterAll(() => { for (const s of sockets) s.destroy(); srv.close(); removeScratchDirs(); });

const reason = (p: Promise<unknown>) => p.then(() => "resolved", (e) => (e instanceof BoundedFetchError ? e.reason : `other: ${e.message}`));

test("an endless chunked body is cut at the cap as it arrives, not buffered", async () => {
  const t0 = Date.now();
  expect(await reason(fetchBounded(`${base}/endless`, { ca, maxBytes: 2 * MiB, timeoutMs: 20_000 }))).toBe("too-large");
  expect(Date.now() - t0).toBeLessThan(10_000);
  await Bun.sleep(200);
  expect(sentByEndless).toBeLessThan(64 * MiB); // the client stopped reading; nothing near 512 MiB went out
});

test("a Content-Length over the cap is refused before the body is read", async () => {
  expect(await reason(fetchBounded(`${base}/lies`, { ca, maxBytes: MiB, timeoutMs: 5000 }))).toBe("too-large");
});

test("redirects are refused, to http and to https alike, naming the target", async () => {
  const e = await fetchBounded(`${base}/redirect-http`, { ca, maxBytes: MiB, timeoutMs: 5000 }).catch((x) => x);
  expect(e).toBeInstanceOf(BoundedFetchError);
  expect(e.message).toMatch(/HTTP 302 redirect to http:\/\/127\.0\.0\.1:1\/m refused/);
  expect(await reason(fetchBounded(`${base}/redirect-https`, { ca, maxBytes: MiB, timeoutMs: 5000 }))).toBe("redirect");
});

test("a body that stops half-way fails at the deadline; a good small reply comes back whole", async () => {
  expect(await reason(fetchBounded(`${base}/stall`, { ca, maxBytes: MiB, timeoutMs: 1500 }))).toBe("timeout");
  expect(Buffer.from(await fetchBounded(`${base}/small`, { ca, maxBytes: MiB, timeoutMs: 5000 })).toString()).toBe("small");
});

test("airroot mount's manifest fetch and the boot path's both use the cap and refuse redirects", async () => {
  const key = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
  const m1 = await loadImageVerifier(`${base}/redirect-http`, key, Buffer.from(ca), memoryLogger()).catch((e) => e.message);
  expect(m1).toMatch(/cannot fetch the image manifest .*redirect to http:\/\/127\.0\.0\.1:1\/m refused/);
  const m2 = await fetchVerifiedManifest([`${base}/endless`, `${base}/redirect-http`], key, ca, undefined, undefined, 20_000).catch((e) => e.message);
  expect(m2).toMatch(/endless: reply exceeds the \d+-byte limit/);
  expect(m2).toMatch(/redirect-http: HTTP 302 redirect/);
}, 60_000);
