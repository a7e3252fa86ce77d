// The delaying/stalling TCP relay helper (used here for stalls and by the benchmarks for added RTT).
import { afterAll, expect, test } from "bun:test";
import { createServer, connect, type Server } from "node:net";
import { startRelay, type Relay } from "../helpers/relay";

const closers: (() => Promise<void>)[] = [];
afterAll(async () => { for (const c of closers.splice(0).reverse()) await c().catch(() => {}); });

async function echoServer(): Promise<{ port: number; srv: Server }> {
  const socks = new Set<import("node:net").Socket>();
  const srv = createServer((s) => { socks.add(s); s.on("data", (d) => s.write(d)); s.on("error", () => {}); s.on("close", () => socks.delete(s)); });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  closers.push(() => new Promise((r) => { for (const s of socks) s.destroy(); srv.close(() => r()); }));
  const a = srv.address();
  return { port: typeof a === "object" && a ? a.port : 0, srv };
}

async function roundTrip(relay: Relay, payload: Buffer, timeoutMs = 5000): Promise<{ ms: number; got: Buffer }> {
  const s = connect({ host: relay.host, port: relay.port });
  await new Promise<void>((r, j) => { s.once("connect", () => r()); s.once("error", j); });
  const t0 = performance.now();
  const chunks: Buffer[] = [];
  let n = 0;
  const got = await new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("round trip timed out")), timeoutMs);
    s.on("data", (d: Buffer) => { chunks.push(d); n += d.length; if (n >= payload.length) { clearTimeout(timer); resolve(Buffer.concat(chunks)); } });
    s.write(payload);
  });
  s.destroy();
  return { ms: performance.now() - t0, got };
}

test("relay forwards bytes both ways unchanged and adds the configured delay", async () => {
  const echo = await echoServer();
  const fast = await startRelay({ targetHost: "127.0.0.1", targetPort: echo.port });
  const slow = await startRelay({ targetHost: "127.0.0.1", targetPort: echo.port, delayMs: 20 });
  closers.push(fast.close, slow.close);
  const payload = Buffer.from(crypto.getRandomValues(new Uint8Array(4 * 1024 * 1024)));
  const a = await roundTrip(fast, payload);
  expect(Buffer.compare(a.got, payload)).toBe(0);
  const small = Buffer.from("ping");
  const b = await roundTrip(slow, small);
  expect(b.got.toString()).toBe("ping");
  expect(b.ms).toBeGreaterThanOrEqual(38); // 20 ms each way
  expect(b.ms).toBeLessThan(500);
  // Bandwidth is not limited by the delay: 4 MiB through the slow relay takes about one RTT more, not per chunk.
  const c = await roundTrip(slow, payload);
  expect(Buffer.compare(c.got, payload)).toBe(0);
  expect(c.ms).toBeLessThan(a.ms + 1000);
}, 30_000);

test("stall() stops forwarding without closing; resume() delivers what was held", async () => {
  const echo = await echoServer();
  const relay = await startRelay({ targetHost: "127.0.0.1", targetPort: echo.port });
  closers.push(relay.close);
  relay.stall();
  await expect(roundTrip(relay, Buffer.from("hello"), 300)).rejects.toThrow(/timed out/);
  const s = connect({ host: relay.host, port: relay.port });
  await new Promise<void>((r) => s.once("connect", () => r()));
  const got = new Promise<string>((r) => s.once("data", (d) => r(d.toString())));
  s.write("held");
  await Bun.sleep(100);
  relay.resume();
  expect(await got).toBe("held");
  s.destroy();
  expect(relay.accepted).toBe(2);
}, 30_000);
