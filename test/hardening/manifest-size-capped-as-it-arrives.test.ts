// The signed manifest (fetched by `airroot mount` and by the boot path in PID 1) is size-capped as bytes arrive: an
// endless chunked body is cut at the cap, never buffered whole (before: 148 -> 462 MB); a Content-Length over the
// cap is refused before the body is read; a body that stops half-way fails at the deadline. No real server sends an
// endless body, so the hostile helper does (a mock for that fault only).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startHostile, type Hostile } from "../helpers/hostile-https";
import { fetchBounded, BoundedFetchError } from "../../src/util/boundedfetch";
import { fetchVerifiedManifest } from "../../src/boot/rootsource";
import { loadImageVerifier } from "../../src/mount/verify";
import { memoryLogger } from "../../src/util/log";

const MiB = 1 << 20;
let srv: Hostile, sentByEndless = 0;
const KEY = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

beforeAll(async () => {
  srv = await startHostile(scratchDir(), (req, res) => {
    if (req.url === "/endless") { // chunked, no Content-Length, never ends: only the reader's own cap stops it
      res.writeHead(200, { "content-type": "application/octet-stream" });
      const chunk = Buffer.alloc(64 * 1024, 0x41);
      const pump = () => { while (!res.destroyed && sentByEndless < 512 * MiB && res.write(chunk)) sentByEndless += chunk.length; };
      res.on("drain", pump);
      pump();
    } else if (req.url === "/lies") { res.writeHead(200, { "content-length": String(200 * MiB) }); res.end("x"); }
    else if (req.url === "/stall") { res.writeHead(200, { "content-length": "100" }); res.write("only part"); }
    else { res.writeHead(200, { "content-length": "5" }); res.end("small"); }
  });
}, 30_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });

const reason = (p: Promise<unknown>) => p.then(() => "resolved", (e) => (e instanceof BoundedFetchError ? e.reason : `other: ${e.message}`));

test("an endless chunked body is cut at the cap as it arrives, not buffered", async () => {
  const t0 = Date.now();
  expect(await reason(fetchBounded(`${srv.url}/endless`, { ca: srv.ca, maxBytes: 2 * MiB, timeoutMs: 20_000 }))).toBe("too-large");
  expect(Date.now() - t0).toBeLessThan(10_000);
  await Bun.sleep(200);
  expect(sentByEndless).toBeLessThan(64 * MiB); // the client stopped reading; nothing near 512 MiB went out
});

test("a Content-Length over the cap is refused before the body is read", async () => {
  expect(await reason(fetchBounded(`${srv.url}/lies`, { ca: srv.ca, maxBytes: MiB, timeoutMs: 5000 }))).toBe("too-large");
});

test("a body that stops half-way fails at the deadline; a good small reply comes back whole", async () => {
  expect(await reason(fetchBounded(`${srv.url}/stall`, { ca: srv.ca, maxBytes: MiB, timeoutMs: 1500 }))).toBe("timeout");
  expect(Buffer.from(await fetchBounded(`${srv.url}/small`, { ca: srv.ca, maxBytes: MiB, timeoutMs: 5000 })).toString()).toBe("small");
});

test("airroot mount's manifest fetch and the boot path's stop an endless manifest at the 64 MiB cap", async () => {
  const m1 = await loadImageVerifier(`${srv.url}/endless`, KEY, Buffer.from(srv.ca), memoryLogger()).catch((e) => e.message);
  expect(m1).toMatch(/cannot fetch the image manifest .*reply exceeds the \d+-byte limit/);
  const m2 = await fetchVerifiedManifest([`${srv.url}/endless`], KEY, srv.ca, undefined, undefined, 20_000).catch((e) => e.message);
  expect(m2).toMatch(/endless: reply exceeds the \d+-byte limit/);
}, 60_000);
