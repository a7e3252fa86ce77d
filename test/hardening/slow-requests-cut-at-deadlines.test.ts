// Slow requests are cut at the listener's own deadlines (Bun ignores node's headersTimeout/requestTimeout): a
// slowloris of 200 connections dripping their request heads at the header deadline while normal requests are
// served, a request body that never completes at the request deadline, an idle keep-alive connection at its
// deadline. Raw sockets on loopback.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { removeScratchDirs } from "../helpers/tmp";
import { closedAfter, deadlineServer, HALF_CLIENT_HELLO } from "../helpers/raw-tls";

const DL = { handshakeMs: 800, headersMs: 800, requestMs: 1500, keepAliveMs: 1500 };
let t: Awaited<ReturnType<typeof deadlineServer>>;
beforeAll(async () => { t = await deadlineServer(DL); }, 30_000);
afterAll(async () => { await t?.srv.close(); removeScratchDirs(); });
const raw = () => t.raw();
const secure = () => t.secure();
const get = () => t.get();

test("a slowloris of 200 header-dripping connections is cut at the header deadline; normal requests still served", async () => {
  // Its own listener with a generous handshake deadline: 200 handshakes at once on a busy 2-core machine can take
  // longer than DL's, and this test is about the header deadline, counted for each connection from its handshake.
  const own = await deadlineServer({ ...DL, handshakeMs: 15_000 });
  const drip = setInterval(() => { for (const { s } of socks) if (!s.destroyed) s.write("X"); }, 100);
  const socks: { s: Awaited<ReturnType<typeof own.secure>>; closed: Promise<number> }[] = [];
  try {
    await Promise.all(Array.from({ length: 200 }, async () => {
      const s = await own.secure();
      const closed = closedAfter(s, performance.now(), 8000);
      s.write("GET / HTTP/1.1\r\nHost: x\r\nX-Drip: ");
      socks.push({ s, closed });
    }));
    for (let i = 0; i < 3; i++) expect(await own.get()).toMatch(/^HTTP\/1\.1 200/);
    const times = await Promise.all(socks.map((x) => x.closed));
    expect(Math.min(...times)).toBeGreaterThan(DL.headersMs - 200);
    expect(Math.max(...times)).toBeLessThan(DL.headersMs + 3000);
  } finally { clearInterval(drip); for (const { s } of socks) s.destroy(); await own.srv.close(); }
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
