// Slow requests are cut at the listener's own deadlines (Bun ignores node's headersTimeout/requestTimeout): a
// slowloris of 200 connections dripping their request heads at the header deadline while normal requests are
// served, a request body that never completes at the request deadline, an idle keep-alive connection at its
// deadline. Raw sockets on loopback.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { startHttps, type HttpsServer } from "../../src/server/https";
import { rawConnect, tlsConnect, getOnce, closedAfter, HALF_CLIENT_HELLO } from "../helpers/raw-tls";

let srv: HttpsServer, port = 0, ca = "";
const DL = { handshakeMs: 800, headersMs: 800, requestMs: 1500, keepAliveMs: 1500 };

beforeAll(async () => {
  const pki = makeTestPki(join(scratchDir(), "pki"));
  ca = readFileSync(pki.caCert, "utf8");
  srv = await startHttps({
    listen: [{ host: "127.0.0.1", port: 0 }], cert: readFileSync(pki.serverCert, "utf8"), key: readFileSync(pki.serverKey, "utf8"),
    clientCa: ca, deadlines: DL, handler: async () => new Response("ok\n"),
  });
  port = srv.addresses[0].port;
}, 30_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });
const raw = () => rawConnect(port);
const secure = () => tlsConnect(port, ca);
const get = () => getOnce(port, ca);

test("a slowloris of 200 header-dripping connections is cut at the header deadline; normal requests still served", async () => {
  const socks = await Promise.all(Array.from({ length: 200 }, secure));
  const t0 = performance.now();
  const closes = socks.map((s) => closedAfter(s, t0, 8000));
  const drip = setInterval(() => { for (const s of socks) if (!s.destroyed) s.write("X"); }, 100);
  socks.forEach((s) => s.write("GET / HTTP/1.1\r\nHost: x\r\nX-Drip: "));
  try {
    for (let i = 0; i < 3; i++) expect(await get()).toMatch(/^HTTP\/1\.1 200/);
    const times = await Promise.all(closes);
    expect(Math.min(...times)).toBeGreaterThan(DL.headersMs - 200);
    expect(Math.max(...times)).toBeLessThan(DL.headersMs + 3000);
  } finally { clearInterval(drip); }
}, 20_000);

test("a request whose body never completes is cut at the request deadline", async () => {
  const s = await secure();
  const t0 = performance.now();
  s.write("POST /api/v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"a\":");
  const ms = await closedAfter(s, t0, 6000);
  expect(ms).toBeGreaterThan(DL.requestMs - 200);
  expect(ms).toBeLessThan(DL.requestMs + 1500);
});

test("an idle keep-alive connection is closed at the keep-alive deadline", async () => {
  const s = await secure();
  let first = "";
  s.on("data", (d) => { first += d; });
  s.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  const t0 = performance.now();
  const ms = await closedAfter(s, t0, 6000);
  expect(first).toMatch(/^HTTP\/1\.1 200/);
  expect(ms).toBeLessThan(DL.keepAliveMs + 1500);
});
