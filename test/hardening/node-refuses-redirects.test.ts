// Nothing a node fetches follows a redirect: the manifest in `airroot mount` and in the boot path, and the image copy
// of `airroot.imagemethod=copy`. A redirect could point at plain http or at a host outside the site; the node uses
// only the URLs its config or command line names. The redirecting server is the hostile helper (a mock: a stock
// mirror does not redirect image URLs by itself).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startHostile, type Hostile } from "../helpers/hostile-https";
import { fetchBounded, BoundedFetchError } from "../../src/util/boundedfetch";
import { fetchVerifiedManifest } from "../../src/boot/rootsource";
import { loadImageVerifier } from "../../src/mount/verify";
import { copyImage } from "../../src/boot/image";
import { memoryLogger } from "../../src/util/log";

let srv: Hostile, dir = "";
const KEY = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

beforeAll(async () => {
  dir = scratchDir();
  srv = await startHostile(dir, (req, res) => {
    if (req.url === "/redirect-https") { res.writeHead(301, { location: `${srv.url}/small` }); res.end(); return; }
    if (req.url?.startsWith("/redirect")) { res.writeHead(302, { location: "http://127.0.0.1:1/m" }); res.end(); return; }
    res.writeHead(200, { "content-length": "5" }); res.end("small");
  });
}, 30_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });

test("a redirect is refused, to http and to https alike, naming the target", async () => {
  const e = await fetchBounded(`${srv.url}/redirect-http`, { ca: srv.ca, maxBytes: 1 << 20, timeoutMs: 5000 }).catch((x) => x);
  expect(e).toBeInstanceOf(BoundedFetchError);
  expect(e.message).toMatch(/HTTP 302 redirect to http:\/\/127\.0\.0\.1:1\/m refused/);
  const e2 = await fetchBounded(`${srv.url}/redirect-https`, { ca: srv.ca, maxBytes: 1 << 20, timeoutMs: 5000 }).catch((x) => x);
  expect(e2.reason).toBe("redirect");
});

test("airroot mount's and the boot path's manifest fetches refuse it", async () => {
  const m1 = await loadImageVerifier(`${srv.url}/redirect-http`, KEY, Buffer.from(srv.ca), memoryLogger()).catch((e) => e.message);
  expect(m1).toMatch(/cannot fetch the image manifest .*redirect to http:\/\/127\.0\.0\.1:1\/m refused/);
  const m2 = await fetchVerifiedManifest([`${srv.url}/redirect-http`], KEY, srv.ca).catch((e) => e.message);
  expect(m2).toMatch(/redirect-http: HTTP 302 redirect/);
});

test("the image copy (imagemethod=copy) refuses it and writes nothing", async () => {
  const caFile = join(dir, "ca.pem");
  writeFileSync(caFile, srv.ca);
  const out = join(dir, "copy");
  const e = await copyImage({ urls: [`${srv.url}/redirect/x.sfs`], caFile } as never, { dir: out }).catch((x) => x.message);
  expect(e).toMatch(/HTTP 302 redirect to http:\/\/127\.0\.0\.1:1\/m refused/);
  expect(existsSync(join(out, "x.sfs"))).toBe(false);
});
