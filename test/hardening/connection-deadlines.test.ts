// The HTTPS listener cuts connections that never complete TLS, request heads that drip in (slowloris), and requests
// whose body never ends, with its own timers (Bun ignores node's handshakeTimeout/headersTimeout/requestTimeout);
// normal requests keep being served meanwhile; and `airroot serve` exits promptly on SIGTERM whatever clients do.
// All with raw sockets on loopback.
import { afterAll, beforeAll, expect, test } from "bun:test";
import net from "node:net";
import tls from "node:tls";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { startHttps, type HttpsServer } from "../../src/server/https";
import { privateAirroot } from "../helpers/boot";
import { initState } from "../../src/server/state";
import { freePort, waitForPort } from "../helpers/ports";

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

/** Resolves with the ms until the server closed the connection (bounded: rejects after `maxMs`). */
function closedAfter(sock: net.Socket | tls.TLSSocket, t0: number, maxMs: number): Promise<number> {
  return new Promise((ok, fail) => {
    const t = setTimeout(() => { sock.destroy(); fail(new Error(`still open after ${maxMs} ms`)); }, maxMs);
    sock.on("error", () => {});
    sock.once("close", () => { clearTimeout(t); ok(performance.now() - t0); });
  });
}
const raw = () => new Promise<net.Socket>((ok) => { const s = net.connect(port, "127.0.0.1", () => ok(s)); s.on("error", () => {}); });
const secure = () => new Promise<tls.TLSSocket>((ok, fail) => {
  const s = tls.connect({ host: "127.0.0.1", port, ca, servername: "localhost" }, () => ok(s)); s.once("error", fail);
});
async function get(): Promise<string> {
  const s = await secure();
  return await new Promise((ok) => {
    let out = ""; s.on("data", (d) => { out += d; }); s.on("close", () => ok(out)); s.on("error", () => ok(out));
    s.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  });
}

test("a connection that sends nothing is cut at the handshake deadline", async () => {
  const t0 = performance.now();
  const ms = await closedAfter(await raw(), t0, 5000);
  expect(ms).toBeGreaterThan(DL.handshakeMs - 100);
  expect(ms).toBeLessThan(DL.handshakeMs + 1500);
});

test("half a ClientHello is cut at the handshake deadline", async () => {
  const s = await raw();
  const t0 = performance.now();
  // A TLS record header announcing a 512-byte handshake message, then only its first bytes.
  s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, ...new Array(20).fill(7)]));
  const ms = await closedAfter(s, t0, 5000);
  expect(ms).toBeLessThan(DL.handshakeMs + 1500);
});

test("200 silent connections at once are all cut, and a normal request is served meanwhile", async () => {
  const socks = await Promise.all(Array.from({ length: 200 }, raw));
  const t0 = performance.now();
  const closes = socks.map((s) => closedAfter(s, t0, 8000));
  expect(await get()).toMatch(/^HTTP\/1\.1 200[\s\S]*ok\n/);
  const times = await Promise.all(closes);
  expect(Math.max(...times)).toBeLessThan(DL.handshakeMs + 3000);
}, 20_000);

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

test("airroot serve exits within seconds of SIGTERM while clients hold connections in every phase", async () => {
  const state = join(scratchDir(), "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  const p = await freePort();
  const airroot = privateAirroot();
  const proc = Bun.spawn([airroot, "serve", "--state", state, "--listen", `127.0.0.1:${p}`, "--no-discovery"], { stdout: "ignore", stderr: "pipe" });
  try {
    await waitForPort("127.0.0.1", p, 20_000);
    const held: net.Socket[] = [];
    for (let i = 0; i < 50; i++) held.push(await new Promise<net.Socket>((ok) => { const s = net.connect(p, "127.0.0.1", () => ok(s)); s.on("error", () => {}); }));
    held.slice(0, 10).forEach((s) => s.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))); // half a ClientHello
    const t0 = performance.now();
    proc.kill("SIGTERM");
    const code = await Promise.race([proc.exited, Bun.sleep(8000).then(() => "still running")]);
    expect(code).toBe(0);
    expect(performance.now() - t0).toBeLessThan(5000);
    for (const s of held) s.destroy();
  } finally { proc.kill("SIGKILL"); }
}, 120_000);
