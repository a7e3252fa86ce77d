// Zero-copy READ answers (ReadViews): the session writes header + views as one frame and calls release() exactly
// once, after the write; checked without the kernel (frames captured) and through a real FUSE mount.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { Op, Errno } from "../../src/fuse/protocol";
import type { ExposedFile, ReadViews } from "../../src/fuse/tree";
import { mountFuse, type FuseMount } from "../../src/fuse/mount";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { run, runOk } from "../helpers/run-async";
import { capturedSession, readIn } from "../helpers/fuse-session";

/** A session over `files` whose frames are captured; `events` records writes and releases in order. */
function setup(files: ExposedFile[], opts: { throwOnWrite?: boolean; log?: (l: string) => void; events?: string[] } = {}) {
  const events: string[] = opts.events ?? [];
  const t = capturedSession(files, { log: opts.log }, (r, total) => {
    if (r.unique !== 0n && total > 16) events.push(`write ${r.unique}`);
    if (opts.throwOnWrite && total > 80) throw new Error("writer failed (test)");
  });
  t.init();
  return { ...t, events };
}

const data = randomBytes(300_000);
const tick = () => new Promise((r) => setTimeout(r, 5));

/** Splits data[o, o+l) into `pieces` views at random cut points (some empty). */
function randomViews(o: number, l: number, pieces: number): Uint8Array[] {
  const cuts = Array.from({ length: pieces - 1 }, () => o + Math.floor(Math.random() * (l + 1))).sort((a, b) => a - b);
  const bounds = [o, ...cuts, o + l];
  return bounds.slice(1).map((b, i) => data.subarray(bounds[i]!, b));
}

/** A file answering with views; every release is counted per read. */
function viewsFile(answer: (o: number, l: number) => Uint8Array[] | unknown, releases: number[], events?: string[]): ExposedFile {
  let n = 0;
  return {
    name: "img", size: data.length, mtimeMs: 1_700_000_000_000,
    read: async (o, l) => {
      const i = n++;
      releases[i] = 0;
      const v = answer(o, l);
      return { views: v, release: () => { releases[i]!++; events?.push(`release ${i}`); } } as ReadViews;
    },
  };
}

describe("session: READ answered with views", () => {
  test("random splits give the exact bytes; release comes once, after the write", async () => {
    for (let iter = 0; iter < 200; iter++) {
      const releases: number[] = [];
      const pieces = 1 + Math.floor(Math.random() * 12);
      const t = setup([viewsFile((o, l) => randomViews(o, l, pieces), releases, undefined)]);
      const o = Math.floor(Math.random() * (data.length + 1000)), l = 1 + Math.floor(Math.random() * 200_000);
      const u = t.send(Op.READ, 2, readIn(o, l));
      await Promise.resolve(); await Promise.resolve(); await Promise.resolve();
      await tick();
      const want = data.subarray(Math.min(o, data.length), Math.min(o + l, data.length));
      expect(t.last()).toMatchObject({ unique: u, error: 0 });
      expect(Buffer.compare(Buffer.from(t.last().payload), want)).toBe(0);
      // Past EOF the file is not asked at all; otherwise one read, released once.
      expect(releases).toEqual(o >= data.length ? [] : [1]);
    }
  });

  test("release runs after the write of its own reply, for replies completing out of order", async () => {
    const ev: string[] = [];
    const waits: (() => void)[] = [];
    let n = 0;
    const file: ExposedFile = { name: "img", size: data.length, mtimeMs: 0, read: (o, l) => {
      const i = n++;
      return new Promise((resolve) => waits.push(() => resolve({
        views: [data.subarray(o, o + 100), data.subarray(o + 100, o + l)], release: () => ev.push(`release ${i}`) })));
    } };
    const t = setup([file], { events: ev });
    ev.length = 0; // the INIT reply
    const us = [0, 1, 2].map((i) => t.send(Op.READ, 2, readIn(i * 5000, 5000)));
    waits[1]!(); waits[2]!(); waits[0]!();
    await tick();
    expect(ev).toEqual([`write ${us[1]}`, "release 1", `write ${us[2]}`, "release 2", `write ${us[0]}`, "release 0"]);
  });

  test("unusable answers are EIO and still released once: short, long, not bytes, bad views", async () => {
    const cases: ((o: number, l: number) => unknown)[] = [
      (o, l) => [data.subarray(o, o + l - 1)],                 // short: must never pass for EOF
      (o, l) => [data.subarray(o, o + l), new Uint8Array(1)],  // long
      () => [],                                                // nothing
      (o, l) => [data.subarray(o, o + l), "x"],                // not a view
      () => "not an array",
    ];
    for (const answer of cases) {
      const releases: number[] = [];
      const logs: string[] = [];
      const t = setup([viewsFile(answer, releases)], { log: (l) => logs.push(l) });
      const u = t.send(Op.READ, 2, readIn(0, 4096));
      await tick();
      expect(t.last()).toMatchObject({ unique: u, error: -Errno.EIO });
      expect(releases).toEqual([1]);
      expect(t.s.stats().readsInFlight).toBe(0);
      expect(logs.some((l) => l.includes("read of img at 0+4096 failed"))).toBe(true);
    }
  });

  test("a failing writer or a throwing release: still exactly one release, no crash", async () => {
    const releases: number[] = [];
    const t = setup([viewsFile((o, l) => [data.subarray(o, o + l)], releases)], { throwOnWrite: true });
    t.send(Op.READ, 2, readIn(0, 4096));
    await tick();
    expect(releases).toEqual([1]);
    const t2 = setup([{ name: "img", size: data.length, mtimeMs: 0,
                        read: async (o, l) => ({ views: [data.subarray(o, o + l)], release: () => { throw new Error("boom"); } }) }]);
    const u = t2.send(Op.READ, 2, readIn(0, 4096));
    await tick();
    expect(t2.last()).toMatchObject({ unique: u, error: 0 });
    expect(t2.last().payload.length).toBe(4096);
  });

  test("a rejected read has nothing to release; views without release() are fine", async () => {
    const t = setup([{ name: "img", size: data.length, mtimeMs: 0,
                       read: async () => { throw Object.assign(new Error("down"), { errno: 110 }); } }]);
    const u = t.send(Op.READ, 2, readIn(0, 4096));
    await tick();
    expect(t.last()).toMatchObject({ unique: u, error: -110 });
    const t2 = setup([{ name: "img", size: data.length, mtimeMs: 0, read: async (o, l) => ({ views: [data.subarray(o, o + l)] }) }]);
    const u2 = t2.send(Op.READ, 2, readIn(7, 4096));
    await tick();
    expect(t2.last()).toMatchObject({ unique: u2, error: 0 });
    expect(Buffer.compare(Buffer.from(t2.last().payload), data.subarray(7, 7 + 4096))).toBe(0);
  });

  test("more views than writev takes (IOV_MAX) are joined, bytes intact", async () => {
    const releases: number[] = [];
    const t = setup([viewsFile((o, l) => Array.from({ length: l }, (_, i) => data.subarray(o + i, o + i + 1)), releases)]);
    const u = t.send(Op.READ, 2, readIn(1234, 3000));
    await tick();
    expect(t.last()).toMatchObject({ unique: u, error: 0 });
    expect(Buffer.compare(Buffer.from(t.last().payload), data.subarray(1234, 4234))).toBe(0);
    expect(releases).toEqual([1]);
  });
});

describe("real FUSE mount", () => {
  const live: FuseMount[] = [];
  afterEach(async () => { for (const m of live.splice(0)) await m.unmount().catch(() => {}); });
  afterAll(async () => { for (const m of live.splice(0)) await m.unmount().catch(() => {}); removeScratchDirs(); });

  test("a 64 MiB file served as views (random splits, delayed answers): cmp matches, every read released once", async () => {
    const dir = scratchDir("airroot-views-");
    const big = randomBytes(64 * 1024 * 1024);
    writeFileSync(join(dir, "want.bin"), big);
    let reads = 0, released = 0, doubles = 0;
    const file: ExposedFile = {
      name: "big.img", size: big.length, mtimeMs: 1_700_000_000_000,
      read: async (o, l) => {
        reads++;
        if (Math.random() < 0.2) await Bun.sleep(Math.floor(Math.random() * 3)); // answers out of order
        const cuts = [o, ...Array.from({ length: Math.floor(Math.random() * 8) }, () => o + Math.floor(Math.random() * l)).sort((a, b) => a - b), o + l];
        let done = false;
        return { views: cuts.slice(1).map((c, i) => big.subarray(cuts[i]!, c)),
                 release: () => { if (done) doubles++; done = true; released++; } };
      },
    };
    const mp = join(dir, "mnt");
    mkdirSync(mp);
    const m = await mountFuse({ mountpoint: mp, files: [file], log: () => {} });
    live.push(m);
    // A separate process reads the mount: this one serves it.
    await runOk(["cmp", join(mp, "big.img"), join(dir, "want.bin")], { timeoutMs: 120_000 });
    const direct = await run(["dd", `if=${join(mp, "big.img")}`, "of=/dev/null", "bs=1M", "iflag=direct", "status=none"], { timeoutMs: 60_000 });
    expect(direct.code).toBe(0);
    expect(reads).toBeGreaterThan(0);
    // Large replies are written on Bun's I/O pool; its "done" for the last ones may still be on its way here.
    for (let i = 0; i < 100 && released < reads; i++) await Bun.sleep(20);
    expect(released).toBe(reads);
    expect(doubles).toBe(0);
  }, 180_000);

  test("a views answer arriving after the connection was aborted is still released exactly once", async () => {
    const dir = scratchDir("airroot-views-");
    let resolveHeld!: (v: ReadViews) => void;
    let releases = 0;
    const held: ExposedFile = { name: "held", size: 1 << 20, mtimeMs: 0,
                                read: () => new Promise<ReadViews>((r) => (resolveHeld = r)) };
    const mp = join(dir, "mnt");
    mkdirSync(mp);
    const m = await mountFuse({ mountpoint: mp, files: [held], log: () => {} });
    live.push(m);
    const reader = run(["dd", `if=${join(mp, "held")}`, "of=/dev/null", "bs=4k", "count=1", "iflag=direct"], { timeoutMs: 20_000 });
    for (let i = 0; i < 100 && m.stats().readsInFlight === 0; i++) await Bun.sleep(20);
    expect(m.stats().readsInFlight).toBe(1);
    m.abort();
    expect((await reader).code).not.toBe(0);
    await m.closed;
    resolveHeld({ views: [new Uint8Array(4096)], release: () => { releases++; } });
    await Bun.sleep(20);
    expect(releases).toBe(1);
    expect(m.stats().readsInFlight).toBe(0);
    await m.unmount();
  }, 30_000);
});
