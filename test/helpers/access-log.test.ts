// servedFromLog against a real nginx (range requests counted by body bytes) and against malformed log lines.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { scratchDir, removeScratchDirs } from "./tmp";
import { makeTestPki } from "./pki";
import { freePort } from "./ports";
import { startNginx, type Nginx } from "./nginx";
import { startNginxSite, type NginxSite } from "./nginx-site";
import { accessLogDirective, RANGE_LOG_FORMAT, servedFromLog, servedRanges } from "./access-log";

let dir = "", ng: Nginx, log = "", ca = "", site: NginxSite, sitePort = 0, rangeLog = "";

beforeAll(async () => {
  dir = scratchDir();
  chmodSync(dir, 0o755); // startNginxSite's workers run as nobody
  mkdirSync(join(dir, "www"));
  writeFileSync(join(dir, "www/root.sfs"), randomBytes(300_000));
  writeFileSync(join(dir, "www/root.manifest"), "m".repeat(1000));
  const pki = makeTestPki(join(dir, "pki"));
  ca = pki.caCert;
  log = join(dir, "ng/access.log");
  mkdirSync(join(dir, "ng"));
  ng = await startNginx({ root: join(dir, "www"), listen: [{ host: "127.0.0.1", port: await freePort() }], cert: pki.serverCert,
    key: pki.serverKey, workDir: join(dir, "ng"), extra: accessLogDirective(log) });
  sitePort = await freePort();
  rangeLog = join(dir, "site-access.log");
  site = await startNginxSite({ workDir: join(dir, "site"), waitFor: [{ host: "127.0.0.1", port: sitePort }], siteConfig: `${RANGE_LOG_FORMAT}
server {
  listen 127.0.0.1:${sitePort} ssl;
  ssl_certificate ${pki.serverCert};
  ssl_certificate_key ${pki.serverKey};
  root ${join(dir, "www")};
  access_log ${rangeLog} airroot_ranges;
}
` });
});

afterAll(async () => {
  await ng?.stop();
  await site?.stop();
  removeScratchDirs();
});

const curl = (url: string, range?: string) => {
  const r = Bun.spawnSync(["curl", "-sS", "-o", "/dev/null", "--cacert", ca, "--max-time", "10", ...(range ? ["-r", range] : []), url]);
  if (r.exitCode !== 0) throw new Error(`curl ${url}: ${r.stderr.toString()}`);
};

describe("servedFromLog", () => {
  test("counts requests, statuses and body bytes per file as nginx logged them", () => {
    writeFileSync(log, "");
    curl(ng.urlFor("root.sfs"), "0-99999");
    curl(ng.urlFor("root.sfs"), "100000-100999");
    curl(ng.urlFor("root.manifest"));
    curl(ng.urlFor("missing.sfs"));
    const img = servedFromLog(log, "root.sfs");
    expect(img).toEqual({ requests: 2, status: { "206": 2 }, bodyBytes: 101_000 });
    expect(servedFromLog(log, "root.manifest").bodyBytes).toBe(1000);
    expect(servedFromLog(log).requests).toBe(4);
    expect(servedFromLog(join(dir, "nonexistent.log")).requests).toBe(0);
  });

  test("malformed and truncated lines are skipped, never counted wrong (bounded fuzz)", () => {
    const good = `127.0.0.1 - - [25/Nov/2026:19:00:00 +0000] "GET /root.sfs HTTP/1.1" 206 4096 "-" "curl/7.88.1"\n`;
    let seed = 11;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    for (let i = 0; i < 1000; i++) {
      const junk = i % 2 ? good.slice(0, rnd(good.length - 1)) + "\n" : Array.from({ length: rnd(200) }, () => String.fromCharCode(rnd(256))).join("") + "\n";
      writeFileSync(log, good + junk + good + good.slice(0, rnd(good.length))); // the last line may be half written
      const s = servedFromLog(log, "root.sfs");
      // Exactly the two whole lines count: a truncated or random line is never a request.
      expect(s).toEqual({ requests: 2, status: { "206": 2 }, bodyBytes: 8192 });
    }
  });
});

describe("servedRanges", () => {
  test("distinct bytes vs bytes sent, from a real nginx logging the Range header", () => {
    const u = `https://127.0.0.1:${sitePort}/root.sfs`;
    curl(u, "0-99999");
    curl(u, "50000-149999"); // half of it fetched again
    curl(u, "200000-200999");
    curl(`https://127.0.0.1:${sitePort}/root.manifest`);
    expect(servedRanges(rangeLog, "root.sfs")).toEqual({ requests: 3, bodyBytes: 201_000, distinctBytes: 151_000 });
    expect(servedRanges(rangeLog, "root.manifest")).toEqual({ requests: 1, bodyBytes: 1000, distinctBytes: 1000 });
  });

  test("distinct bytes match a byte-map reference for random spans; junk lines never count (bounded)", () => {
    let seed = 5;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    const path = join(dir, "fuzz.log");
    for (let i = 0; i < 300; i++) {
      const seen = new Uint8Array(5000);
      let text = "", total = 0;
      for (let j = rnd(12); j > 0; j--) {
        const start = rnd(4000), len = rnd(1000);
        if (rnd(2)) text += `"GET /root.sfs HTTP/1.1" 206 ${len} "bytes=${start}-${start + 999}"\n`;
        else { text += `"GET /root.sfs HTTP/1.1" 200 ${len} "-"\n`; seen.fill(1, 0, len); total += len; continue; }
        seen.fill(1, start, start + len);
        total += len;
        if (rnd(4) === 0) text += `"GET /root.sfs HTTP/1.1" 206 ${rnd(99)}`.slice(0, rnd(30)) + "\n"; // truncated junk
      }
      writeFileSync(path, text + `"GET /root.sfs HTTP/1.1" 206 77 "bytes=0-76"`); // a half-written last line
      const r = servedRanges(path, "root.sfs");
      expect(r.bodyBytes).toBe(total);
      expect(r.distinctBytes).toBe(seen.reduce((a, b) => a + b, 0));
    }
  });
});
