// The send-stall deadline on airroot serve's listeners (raw sockets on loopback): a client that asks for a large
// boot file and stops reading is cut once a chunk waits longer than sendStallMs, while a normal client downloading
// the same file for longer than the whole-request deadline keeps going (the deadline is re-armed at every chunk the
// client takes). On the plain-HTTP listener and on HTTPS.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { closedAfter } from "../helpers/raw-tls";
import { initState, statePaths } from "../../src/server/state.ts";
import { serve, type RunningServer } from "../../src/server/serve.ts";
import { installBootFiles } from "../../src/server/bootfiles.ts";

const DL = { requestMs: 1000, sendStallMs: 1500 };
const cuts: { at: number; line: string }[] = [];
let dir: string, state: string, srv: RunningServer, httpPort: number, httpsPort: number;
const initrd = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(40 * 1024 * 1024)]);
const digest = createHash("sha256").update(initrd).digest("hex");

beforeAll(async () => {
  dir = scratchDir();
  state = join(dir, "state");
  await initState(state, { addresses: ["127.0.0.1"] });
  const k = Buffer.alloc(4096); k.write("HdrS", 0x202, "latin1");
  writeFileSync(join(dir, "k"), k);
  writeFileSync(join(dir, "i"), initrd);
  installBootFiles(state, { kernel: join(dir, "k"), initrd: join(dir, "i"), ipxeDir: null });
  const note = (m: string) => { if (/cut: response deadline passed/.test(m)) cuts.push({ at: performance.now(), line: m }); };
  const log = { info: () => {}, warn: () => {}, error: () => {}, debug: note };
  srv = await serve({ stateDir: state, listen: ["127.0.0.1:0"], httpListen: ["127.0.0.1:0"], discovery: false, configCheckMs: 0, deadlines: DL, log });
  httpPort = srv.httpListening[0].port;
  httpsPort = srv.listening[0].port;
}, 60_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });

const REQ = "GET /boot/initramfs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

function connect(secure: boolean): Promise<net.Socket> {
  return new Promise((ok, fail) => {
    const s: net.Socket = secure
      ? tls.connect({ host: "127.0.0.1", port: httpsPort, ca: readFileSync(statePaths(state).siteCaCert, "utf8"), servername: "localhost" }, () => ok(s))
      : net.connect(httpPort, "127.0.0.1", () => ok(s));
    s.once("error", fail);
  });
}

/** Reads the whole reply at about `bytesPerSec` (pausing between 64 KiB steps); resolves with the body's sha256. */
async function slowDownload(secure: boolean, bytesPerSec: number, maxMs: number): Promise<{ sha: string; ms: number; bytes: number }> {
  const s = await connect(secure);
  const t0 = performance.now();
  const chunks: Buffer[] = [];
  let got = 0;
  return await new Promise((ok, fail) => {
    const t = setTimeout(() => { s.destroy(); fail(new Error(`download not done after ${maxMs} ms (${got} bytes)`)); }, maxMs);
    s.on("data", (d: Buffer) => {
      chunks.push(d); got += d.length;
      const due = (got / bytesPerSec) * 1000 - (performance.now() - t0);
      if (due > 20) { s.pause(); setTimeout(() => s.resume(), due); }
    });
    s.on("error", (e) => { clearTimeout(t); fail(e); });
    s.on("close", () => {
      clearTimeout(t);
      const all = Buffer.concat(chunks);
      const at = all.indexOf("\r\n\r\n");
      const body = all.subarray(at + 4);
      ok({ sha: createHash("sha256").update(body).digest("hex"), ms: performance.now() - t0, bytes: body.length });
    });
    s.write(REQ);
  });
}

for (const secure of [false, true]) {
  test(`${secure ? "HTTPS" : "plain HTTP"}: a client that stops reading is cut at the send-stall deadline while a slow, steady one completes`, async () => {
    // The staller: asks, reads nothing. Socket buffers fill, then no chunk is taken for sendStallMs.
    const stall = await connect(secure);
    stall.pause();
    let stalledGot = 0;
    stall.on("data", (d: Buffer) => { stalledGot += d.length; });
    const before = cuts.length;
    const t0 = performance.now();
    stall.write(REQ);
    // The steady client: 40 MiB at ~12 MiB/s takes over 3 s, far past requestMs (1 s), and must not be cut.
    const dl = await slowDownload(secure, 12 * 1024 * 1024, 30_000);
    expect(dl.bytes).toBe(initrd.length);
    expect(dl.sha).toBe(digest);
    expect(dl.ms).toBeGreaterThan(DL.requestMs * 2);
    // The server cut the staller (its log says so) after sendStallMs without progress ...
    expect(cuts.length).toBe(before + 1);
    expect(cuts[before].line).toMatch(/^(http|https): connection from 127\.0\.0\.1 cut: response deadline passed$/);
    expect(cuts[before].at - t0).toBeGreaterThan(DL.sendStallMs - 200);
    expect(cuts[before].at - t0).toBeLessThan(DL.sendStallMs + 6000);
    // ... and when it reads again, it finds the connection closed with the file unfinished.
    const closed = closedAfter(stall, performance.now(), 10_000);
    stall.resume();
    await closed;
    expect(stalledGot).toBeLessThan(initrd.length);
  }, 60_000);
}
