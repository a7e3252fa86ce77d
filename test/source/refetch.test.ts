// Issue 2: a boot-like workload on a squashfs loop-mounted over the FUSE file must not make the engine fetch the same
// image bytes again and again. Real nginx (the Range of each request logged), real FUSE, loop and squashfs.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki } from "../helpers/pki";
import { startNginxSite, type NginxSite } from "../helpers/nginx-site";
import { freePort } from "../helpers/ports";
import { RANGE_LOG_FORMAT, servedRanges } from "../helpers/access-log";
import { runOk, run } from "../helpers/run-async";
import { RemoteImage, type RemoteImageOptions } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";
import { mountFuse, type FuseMount } from "../../src/fuse/mount";

const KiB = 1024, MiB = 1024 * KiB;
let dir: string, ng: NginxSite | undefined, url: string, ca: Buffer, accessLog: string;
let img: RemoteImage | undefined, fuse: FuseMount | undefined;
const TRACE = !!process.env.REFETCH_TRACE; // prints every read and fetch (for diagnosis)
const loopMnt = () => join(dir, "root");

// Incompressible bytes, so the squashfs is as large as the tree.
const bytes = (n: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(n)));

beforeAll(async () => {
  dir = scratchDir();
  const pki = makeTestPki(join(dir, "pki"));
  ca = readFileSync(pki.caCert);
  // A boot-like tree: ~1500 small files in nested directories (configs, libraries' small parts) and a few big ones.
  const tree = join(dir, "tree");
  let seed = 1;
  for (let d = 0; d < 20; d++) {
    const sub = join(tree, `usr/lib/d${d}`);
    mkdirSync(sub, { recursive: true });
    // Mostly small files, some library-sized ones (up to ~400 KiB).
    for (let f = 0; f < 40; f++) {
      const n = seed++ % 8 === 0 ? 64 * KiB + ((seed * 7919) % (340 * KiB)) : 1 + ((seed * 7919) % (24 * KiB));
      writeFileSync(join(sub, `f${f}`), bytes(n));
    }
  }
  mkdirSync(join(tree, "big"));
  for (let b = 0; b < 4; b++) writeFileSync(join(tree, `big/b${b}`), bytes(3 * MiB + b * 12345));
  mkdirSync(join(dir, "www"));
  await runOk(["mksquashfs", tree, join(dir, "www/root.sfs"), "-comp", "zstd", "-noappend", "-quiet", "-no-progress"], { timeoutMs: 120_000 });
  // startNginxSite's workers run as nobody: they must be able to read the image.
  for (const p of [dir, join(dir, "www")]) chmodSync(p, 0o755);
  chmodSync(join(dir, "www/root.sfs"), 0o644);
  accessLog = join(dir, "access.log");
  const port = await freePort("127.0.0.1");
  ng = await startNginxSite({ workDir: join(dir, "ng"), waitFor: [{ host: "127.0.0.1", port }], siteConfig: `${RANGE_LOG_FORMAT}
server {
  listen 127.0.0.1:${port} ssl;
  ssl_certificate ${pki.serverCert};
  ssl_certificate_key ${pki.serverKey};
  root ${join(dir, "www")};
  keepalive_requests 100000;
  access_log ${accessLog} airroot_ranges;
}
` });
  url = `https://127.0.0.1:${port}/root.sfs`;
}, 180_000);

afterAll(async () => {
  if (dir) await run(["umount", loopMnt()]).catch(() => {});
  await fuse?.unmount().catch(() => {});
  await img?.close().catch(() => {});
  await ng?.stop().catch(() => {});
  removeScratchDirs();
}, 60_000);

/** Mounts the image through FUSE + loop + squashfs, runs the boot-like workload, unmounts; returns fetched/distinct. */
async function bootLike(opts: RemoteImageOptions): Promise<number> {
  writeFileSync(accessLog, ""); // nginx appends (O_APPEND): each run counts only its own requests
  img = await RemoteImage.open([url], { ca, log: memoryLogger(), ...opts });
  const mp = join(dir, "fuse");
  mkdirSync(mp, { recursive: true });
  const image = img;
  fuse = await mountFuse({ mountpoint: mp, log: () => {}, files: [{ name: "root.sfs", size: image.size, mtimeMs: image.mtimeMs,
    read: (o, l) => { if (TRACE) console.error(`read ${o / KiB} +${l / KiB}`); return image.readViews(o, l); } }] });
  if (TRACE) {
    const eng = image as unknown as { newSpan(f: number, c: number, k: string): unknown };
    const orig = eng.newSpan.bind(eng);
    eng.newSpan = (f, c, k) => { console.error(`span ${k} ${f}+${c}`); return orig(f, c, k); };
  }
  mkdirSync(loopMnt(), { recursive: true });
  await runOk(["mount", "-t", "squashfs", "-o", "loop,ro", join(mp, "root.sfs"), loopMnt()], { timeoutMs: 30_000 });
  try {
    // Buffered loop I/O (like src/sys/loop.ts, which never sets LO_FLAGS_DIRECT_IO): the FUSE file's page cache holds
    // what was read, which is what lets the engine treat served blocks as cheap to drop.
    const loopDev = (await runOk(["losetup", "-n", "-O", "NAME,DIO", "-j", join(mp, "root.sfs")])).trim().split(/\s+/);
    expect(loopDev[1]).toBe("0");
    // Random small files in a fixed order, then stat of everything, then the big files sequentially: separate
    // processes, since this process serves the FUSE mount.
    const script = `set -e; cd ${loopMnt()}
find . -type f -path './usr/*' | sort | awk 'NR % 3 != 0' | shuf --random-source=<(yes) | while read -r f; do cat "$f" > /dev/null; done
find . -exec stat -c '%s' {} + > /dev/null
for b in big/b0 big/b2 big/b3; do cat "$b" > /dev/null; done
cat big/b1 big/b0 > /dev/null`;
    await runOk(["bash", "-c", script], { timeoutMs: 240_000 });
  } finally {
    await runOk(["umount", loopMnt()], { timeoutMs: 30_000 });
    await fuse.unmount();
  }
  const st = img.status();
  await img.close();
  const served = servedRanges(accessLog, "root.sfs");
  const ratio = st.bytesFetched / served.distinctBytes;
  console.log(`refetch (${st.blockSize / KiB} KiB blocks, ${opts.cacheMb ?? 8} MiB cache): image ` +
    `${(img.size / MiB).toFixed(1)} MiB, distinct ${(served.distinctBytes / MiB).toFixed(1)} MiB, ` +
    `fetched ${(st.bytesFetched / MiB).toFixed(1)} MiB (served ${(served.bodyBytes / MiB).toFixed(1)} MiB in ${served.requests} ` +
    `requests), ratio ${ratio.toFixed(2)}; hits ${st.cacheHits}, misses ${st.cacheMisses}, coalesced ${st.coalescedReads}, ` +
    `readahead ${(st.readaheadBytes / MiB).toFixed(1)} MiB, reads ${st.readsTotal}`);
  expect(served.distinctBytes).toBeGreaterThan(20 * MiB);
  expect(served.bodyBytes).toBe(st.bytesFetched + 1); // the server agrees with the engine (+ the 1-byte probe at open)
  return ratio;
}

test("boot-like workload through FUSE + loop + squashfs: bytes fetched stay within 1.1x the distinct bytes", async () => {
  // The mount daemon's wiring and defaults: 128 KiB blocks, 8 MiB cache, 8 MiB kernel readahead on the FUSE file.
  // Before the fix (plain LRU, readahead up to half the cache, re-reading served blocks): 1.32-1.35x.
  expect(await bootLike({})).toBeLessThanOrEqual(1.1);
}, 300_000);

test("the same with 256 KiB blocks (a signed image's chunk size) and a 16 MiB cache (the same number of blocks)", async () => {
  // Before the fix: 1.32-1.51x. With 256 KiB blocks and an 8 MiB cache it is still ~1.2x (see src/source/README.md).
  expect(await bootLike({ blockSize: 256 * KiB, cacheMb: 16 })).toBeLessThanOrEqual(1.1);
}, 300_000);

test("readahead of many interleaved sequential streams stays within one window of unread bytes, bytes exact", async () => {
  const eng = await RemoteImage.open([url], { ca, log: memoryLogger() }); // 8 MiB cache → 2 MiB readahead window
  try {
    const want = readFileSync(join(dir, "www/root.sfs"));
    const peek = eng as unknown as { cache: { untouchedSize: number }; raPending: number; raMax: number };
    let worst = 0, bad = 0;
    // 4 streams (as many as the detector tracks), each reading 128 KiB at a time from its own region, interleaved.
    const streams = Array.from({ length: 4 }, (_, i) => Math.floor((i * want.length) / 4 / 4096) * 4096);
    for (let step = 0; step < 40; step++) {
      await Promise.all(streams.map(async (off, i) => {
        const got = await eng.read(off, 128 * KiB);
        if (!Buffer.from(got).equals(want.subarray(off, off + 128 * KiB))) bad++;
        streams[i] = off + 128 * KiB;
        worst = Math.max(worst, peek.cache.untouchedSize + peek.raPending);
      }));
    }
    expect(bad).toBe(0);
    expect(peek.raMax).toBe(2 * MiB);
    // One window plus at most the blocks of the reads being served at that moment (counted out of the budget).
    expect(worst).toBeLessThanOrEqual(peek.raMax + 4 * 2 * 128 * KiB);
    expect(eng.status().readaheadBytes).toBeGreaterThan(2 * MiB); // readahead still happens
  } finally {
    await eng.close();
  }
}, 120_000);
