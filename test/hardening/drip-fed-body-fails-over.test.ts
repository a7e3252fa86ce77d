// A source that drips its body (a few bytes at a time, never silent for a whole stall period) is seen as too slow
// and its request moves to another server within about one stall period, instead of costing the request deadline.
// No real server drips on purpose: the hostile helper does (a mock for that fault only); the good source is nginx.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, utimesSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startHostile, rangeReply, type Hostile } from "../helpers/hostile-https";
import { startNginx, type Nginx } from "../helpers/nginx";
import { makeTestPki } from "../helpers/pki";
import { freePort } from "../helpers/ports";
import { RemoteImage } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";

const MiB = 1 << 20;
let dir = "", data: Buffer, nginx: Nginx, drip: Hostile, etag = "", ca = "";

beforeAll(async () => {
  dir = scratchDir();
  data = Buffer.from(crypto.getRandomValues(new Uint8Array(4 * MiB)));
  writeFileSync(join(dir, "img.sfs"), data);
  utimesSync(join(dir, "img.sfs"), new Date(1_700_000_000_000), new Date(1_700_000_000_000));
  drip = await startHostile(dir, (req, res) => {
    const r = rangeReply(req, data, etag);
    if (!r) { res.writeHead(400); res.end(); return; }
    res.writeHead(206, r.headers);
    if (r.start === 0 && r.end === 0) { res.end(r.body); return; } // the probe is answered well: the source is admitted
    let at = 0;
    const t = setInterval(() => { // 64 bytes every 50 ms: never silent, ~1.3 KB/s
      if (res.destroyed || at >= r.body.length) { clearInterval(t); return; }
      res.write(r.body.subarray(at, at + 64)); at += 64;
    }, 50);
    res.on("close", () => clearInterval(t));
  }, "127.0.0.2");
  ca = drip.ca;
  const pki = { serverCert: join(dir, "hostile-pki/server.crt"), serverKey: join(dir, "hostile-pki/server.key") };
  const port = await freePort("127.0.0.3");
  nginx = await startNginx({ root: dir, listen: [{ host: "127.0.0.3", port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng") });
  const probe = await RemoteImage.open([nginx.urlFor("img.sfs")], { ca, log: memoryLogger() });
  etag = probe.validator;
  await probe.close();
}, 60_000);
afterAll(async () => { await drip?.close(); await nginx?.stop(); removeScratchDirs(); }, 30_000);

test("a dripping source is dropped as too slow within about one stall period; the read comes whole from nginx", async () => {
  const img = await RemoteImage.open([`${drip.url}/img.sfs`, nginx.urlFor("img.sfs")], { ca, log: memoryLogger(), stallTimeoutMs: 1000, requestTimeoutMs: 30_000 });
  try {
    expect(img.status().sources[0].state).toBe("healthy");
    const t0 = performance.now();
    const got = await img.read(MiB, MiB);
    const ms = performance.now() - t0;
    expect(Buffer.compare(Buffer.from(got), data.subarray(MiB, 2 * MiB))).toBe(0);
    expect(ms).toBeLessThan(5000); // not the 30 s request deadline
    expect(img.status().sources[0].lastError).toMatch(/^too slow: \d+ bytes in 1(\.\d)? s$/);
  } finally { await img.close(); }
}, 30_000);
