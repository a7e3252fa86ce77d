// Reply faults nginx cannot be made to produce (short body, chunked framing, wrong Content-Range, body longer than asked, a changed
// ETag, error statuses, no reply at all): a small node:https server injects them, as a mock for those faults only.
// nginx stays the good source; the engine must never return the faulty bytes and must fail over without an error.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, writeFileSync, utimesSync } from "node:fs";
import https from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { freePort } from "../helpers/ports";
import { crashNginx } from "../helpers/crash";
import { RemoteImage } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";

const MiB = 1024 * 1024;
let dir: string, pki: TestPki, ca: Buffer, data: Buffer, etag: string;
let A: Nginx;
let mock: https.Server, mockUrl: string;
const mockSockets = new Set<Socket>();
type Mode = "good" | "short" | "chunked" | "wrong-range" | "long" | "etag-change" | "http-500" | "no-content-range" | "silent";
let mode: Mode = "good";

function handler(req: IncomingMessage, res: ServerResponse) {
  const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
  if (!m) { res.writeHead(200, { "content-length": data.length, etag }); res.end(data); return; }
  const start = Number(m[1]), end = Math.min(Number(m[2]), data.length - 1);
  const body = data.subarray(start, end + 1);
  const cr = `bytes ${start}-${end}/${data.length}`;
  // The probe (bytes 0-0) is always answered well, so the source is admitted and the fault hits a data read.
  const fault: Mode = start === 0 && end === 0 ? "good" : mode;
  switch (fault) {
    case "good": res.writeHead(206, { "content-range": cr, "content-length": body.length, etag }); res.end(body); return;
    case "short": // announces the full length, sends half, hangs up
      res.writeHead(206, { "content-range": cr, "content-length": body.length, etag });
      res.write(body.subarray(0, body.length >> 1), () => res.socket?.destroy()); return;
    case "chunked": // a framing image servers do not use for ranges: refused, not decoded
      res.writeHead(206, { "content-range": cr, etag }); res.end(body); return;
    case "long": // more bytes than asked for
      res.writeHead(206, { "content-range": cr, "content-length": body.length + 5, etag }); res.end(Buffer.concat([body, Buffer.from("extra")])); return;
    case "wrong-range": { // a neighbouring range, consistent in itself
      const s2 = start + 4096, e2 = end + 4096;
      res.writeHead(206, { "content-range": `bytes ${s2}-${e2}/${data.length}`, "content-length": e2 - s2 + 1, etag });
      res.end(data.subarray(s2, e2 + 1)); return;
    }
    case "etag-change": res.writeHead(206, { "content-range": cr, "content-length": body.length, etag: '"changed"' }); res.end(body); return;
    case "http-500": res.writeHead(500, { "content-length": 0 }); res.end(); return;
    case "no-content-range": res.writeHead(206, { "content-length": body.length, etag }); res.end(body); return;
    case "silent": return; // accept the request, never answer
  }
}

beforeAll(async () => {
  dir = scratchDir();
  pki = makeTestPki(join(dir, "pki"));
  ca = readFileSync(pki.caCert);
  data = Buffer.from(crypto.getRandomValues(new Uint8Array(8 * MiB)));
  writeFileSync(join(dir, "img.sfs"), data);
  utimesSync(join(dir, "img.sfs"), new Date(1_700_000_000_000), new Date(1_700_000_000_000));
  const port = await freePort("127.0.0.2");
  A = await startNginx({ root: dir, listen: [{ host: "127.0.0.2", port }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ng") });
  const probe = await RemoteImage.open([A.urlFor("img.sfs")], { ca, log: memoryLogger() });
  etag = probe.validator; // the mock must agree with nginx on the validator to be admitted
  await probe.close();
  mock = https.createServer({ cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey) }, handler);
  mock.on("connection", (s: Socket) => { mockSockets.add(s); s.on("close", () => mockSockets.delete(s)); });
  await new Promise<void>((r) => mock.listen(0, "127.0.0.3", () => r()));
  const a = mock.address();
  mockUrl = `https://127.0.0.3:${typeof a === "object" && a ? a.port : 0}/img.sfs`;
}, 60_000);

afterAll(async () => {
  for (const s of mockSockets) s.destroy();
  await new Promise<void>((r) => mock?.close(() => r()));
  if (A) await crashNginx(A);
  removeScratchDirs();
}, 60_000);

const cases: [Mode, RegExp][] = [
  ["short", /^connection closed after \d+ of \d+ bytes$/],
  ["chunked", /^bad HTTP reply: reply uses Transfer-Encoding instead of a Content-Length$/],
  ["long", /^Content-Length \d+ for a \d+-byte range$/],
  ["wrong-range", /^wrong Content-Range: asked bytes \d+-\d+, got \d+-\d+$/],
  ["etag-change", /^image changed on the server \(validator "changed", expected /],
  ["http-500", /^HTTP 500 for \/img\.sfs$/],
  ["no-content-range", /^missing Content-Range$/],
  ["silent", /^stalled for 0\.5 s$/],
];

for (const [m, reason] of cases) {
  test(`a '${m}' reply is a source fault: bytes come from the other server, never from the faulty one`, async () => {
    mode = m;
    const log = memoryLogger();
    const img = await RemoteImage.open([mockUrl, A.urlFor("img.sfs")], { ca, log, stallTimeoutMs: 500 });
    try {
      expect(img.status().sources[0].state).toBe("healthy");
      const off = 3 * MiB + 12345;
      const got = await img.read(off, MiB);
      expect(Buffer.compare(Buffer.from(got), data.subarray(off, off + MiB))).toBe(0);
      const s0 = img.status().sources[0];
      expect(s0.lastError).toMatch(reason);
      expect(s0.state).toBe(m === "etag-change" ? "excluded" : "down");
      expect(s0.bytes).toBe(0);
      expect(log.lines.some((l) => l.includes(mockUrl) && (l.startsWith("error while communicating") || l.startsWith("excluding")))).toBe(true);
    } finally {
      await img.close();
    }
  }, 30_000);
}
