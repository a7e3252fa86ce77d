// A TLS handshake that never completes is cut at the handshake deadline by the listener's own timer (Bun ignores
// node's handshakeTimeout): a connection that sends nothing, half a ClientHello, 200 at once while a normal request
// is served; and `airroot serve` exits within seconds of SIGTERM whatever its clients hold. Raw sockets on loopback.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { closedAfter, deadlineServer, HALF_CLIENT_HELLO } from "../helpers/raw-tls";
import { privateAirroot } from "../helpers/boot";
import { initState } from "../../src/server/state";
import { freePort, waitForPort } from "../helpers/ports";
import net from "node:net";

const DL = { handshakeMs: 800, headersMs: 800, requestMs: 1500, keepAliveMs: 1500 };
let t: Awaited<ReturnType<typeof deadlineServer>>;
beforeAll(async () => { t = await deadlineServer(DL); }, 30_000);
afterAll(async () => { await t?.srv.close(); removeScratchDirs(); });
const raw = () => t.raw();
const secure = () => t.secure();
const get = () => t.get();

test("a connection that sends nothing is cut at the handshake deadline", async () => {
  const t0 = performance.now();
  const ms = await closedAfter(await raw(), t0, 5000);
  expect(ms).toBeGreaterThan(DL.handshakeMs - 100);
  expect(ms).toBeLessThan(DL.handshakeMs + 1500);
});

test("half a ClientHello is cut at the handshake deadline", async () => {
  const s = await raw();
  const t0 = performance.now();
  s.write(HALF_CLIENT_HELLO);
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
