// `--io-timeout` is an upper bound on a reader's wait: once it has passed with no server delivering, further reads
// (the kernel re-issues a failed read) fail at once instead of waiting the whole timeout again, and a source that
// answers the health probe but fails every real read cannot keep readers waiting. Reads wait normally again as soon
// as a source delivers on a real read. The probe-only source is the hostile helper (a mock for that fault only).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { startHostile, rangeReply, type Hostile } from "../helpers/hostile-https";
import { RemoteImage, IoError } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";

const MiB = 1 << 20;
const data = Buffer.from(crypto.getRandomValues(new Uint8Array(4 * MiB)));
let srv: Hostile, failReads = true;

beforeAll(async () => {
  srv = await startHostile(scratchDir(), (req, res) => {
    const r = rangeReply(req, data);
    if (!r) { res.writeHead(400); res.end(); return; }
    if (failReads && !(r.start === 0 && r.end === 0)) { res.writeHead(503, { "content-length": "0" }); res.end(); return; }
    res.writeHead(206, r.headers); res.end(r.body);
  });
}, 30_000);
afterAll(async () => { await srv?.close(); removeScratchDirs(); });

test("after the io timeout, reads fail at once until a real read succeeds; then they are served again", async () => {
  const img = await RemoteImage.open([`${srv.url}/img.sfs`], { ca: srv.ca, log: memoryLogger(), ioTimeoutMs: 1500 });
  try {
    const timed = async (off: number) => {
      const t0 = performance.now();
      const r = await img.read(off, 4096).then(() => "ok", (e) => (e instanceof IoError ? "EIO" : `other: ${e.message}`));
      return { r, ms: performance.now() - t0 };
    };
    const first = await timed(MiB);
    expect(first.r).toBe("EIO");
    expect(first.ms).toBeGreaterThan(1400);
    for (const off of [MiB, 2 * MiB, 3 * MiB]) { // the kernel's re-issue, and other reads: no new wait
      const again = await timed(off);
      expect(again.r).toBe("EIO");
      expect(again.ms).toBeLessThan(200);
    }
    failReads = false; // the source recovers: a background fetch proves it on a real read
    let served = false;
    for (let i = 0; i < 100 && !served; i++) { served = (await timed(2 * MiB + 8192)).r === "ok"; if (!served) await Bun.sleep(100); }
    expect(served).toBe(true);
    failReads = true; // and a later outage waits the full timeout again
    const later = await timed(3 * MiB + 65536 * 3);
    expect(later.r).toBe("EIO");
    expect(later.ms).toBeGreaterThan(1400);
  } finally { await img.close(); }
}, 60_000);
