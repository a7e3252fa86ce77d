// Integration tests of the FUSE server against the real kernel: /dev/fuse, mount(2), page cache, loop + squashfs.
// Every reader of the mount is a separate process started asynchronously: this process serves the mount.
import { afterAll, afterEach, expect, test } from "bun:test";
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync, symlinkSync } from "node:fs";
import { open as openAsync, type FileHandle } from "node:fs/promises";
import { randomBytes, createHash } from "node:crypto";
import { join } from "node:path";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { run, runOk } from "../helpers/run-async";
import { mountFuse, mountDevice, findMount, type FuseMount } from "../../src/fuse/mount";
import type { ExposedFile } from "../../src/fuse/tree";
import { FUSE_DEV_IOC_CLONE } from "../../src/fuse/protocol";
import * as libc from "../../src/sys/libc";

const live: FuseMount[] = [];
const logs: string[] = [];
const log = (l: string) => logs.push(l);

async function mountIn(dir: string, files: ExposedFile[], extra: object = {}): Promise<{ m: FuseMount; mp: string }> {
  const mp = join(dir, "mnt");
  mkdirSync(mp, { recursive: true });
  const m = await mountFuse({ mountpoint: mp, files, log, ...extra });
  live.push(m);
  return { m, mp };
}

function mountedUnder(prefix: string): string[] {
  return readFileSync("/proc/self/mounts", "utf8").split("\n").filter((l) => (l.split(" ")[1] ?? "").startsWith(prefix));
}

afterEach(async () => {
  for (const m of live.splice(0)) await m.unmount().catch(() => {});
});
afterAll(async () => {
  for (const m of live.splice(0)) await m.unmount().catch(() => {});
  removeScratchDirs();
});

const memFile = (name: string, data: Uint8Array, over: Partial<ExposedFile> = {}): ExposedFile => ({
  name, size: data.length, mtimeMs: 1_700_000_000_000, read: async (o, l) => data.subarray(o, o + l), ...over,
});

test("256 MiB file: sha256sum, stat, ls, df through the mount; unmount ends `closed`", async () => {
  const dir = scratchDir("airroot-fuse-");
  const data = randomBytes(256 * 1024 * 1024);
  const want = createHash("sha256").update(data).digest("hex");
  const { m, mp } = await mountIn(dir, [memFile("big.img", data), memFile("small.txt", new TextEncoder().encode("hi\n"))],
                                  { fsname: "airroot:test image" });
  expect(m.stats()).toMatchObject({ negotiatedMaxRead: 1 << 20, negotiatedMaxBackground: 64 });
  expect(m.stats().kernelProtocol).toMatch(/^7\.\d+$/);

  const sum = await runOk(["sha256sum", join(mp, "big.img")], { timeoutMs: 120_000 });
  expect(sum.split(" ")[0]).toBe(want);
  expect(await runOk(["cat", join(mp, "small.txt")])).toBe("hi\n");
  expect((await runOk(["stat", "-c", "%s %F %a %u", join(mp, "big.img")])).trim()).toBe(`${data.length} regular file 444 0`);
  expect((await runOk(["stat", "-c", "%F %a", mp])).trim()).toBe("directory 555");
  expect((await runOk(["ls", "-1a", mp])).split("\n").filter(Boolean)).toEqual([".", "..", "big.img", "small.txt"]);
  const df = (await runOk(["df", "-B1", "--output=size,avail", mp])).trim().split("\n")[1]!.trim().split(/\s+/);
  expect(Number(df[0])).toBe(data.length + 4096); // 65536 + 1 blocks of 4 KiB
  expect(Number(df[1])).toBe(0);
  expect(findMount(mp)).toMatchObject({ fstype: "fuse.airroot", source: "airroot:test image" });
  expect((await run(["stat", join(mp, "missing")])).code).not.toBe(0);
  // Read-only: writes and creates are refused.
  expect((await run(["sh", "-c", `echo x > ${join(mp, "small.txt")}`])).code).not.toBe(0);
  expect((await run(["touch", join(mp, "new")])).code).not.toBe(0);
  // A second FUSE mount on the same mountpoint is refused (stacking would also risk a self-deadlocking stat).
  await expect(mountFuse({ mountpoint: mp, files: [] })).rejects.toThrow(/already has fuse.airroot \(airroot:test image\) mounted/);
  const line = mountedUnder(mp)[0]!;
  expect(line).toContain("fuse.airroot");
  expect(line).toContain("max_read=1048576");
  // Kernel readahead was raised for this mount's bdi (default 8 MiB).
  expect(readFileSync(`/sys/class/bdi/${mountDevice(mp)}/read_ahead_kb`, "utf8").trim()).toBe("8192");

  await m.unmount();
  await m.closed;
  await m.unmount(); // idempotent
  expect(mountedUnder(mp)).toEqual([]);
}, 180_000);

test("a mountpoint given through a symlink is found and unmounted", async () => {
  const dir = scratchDir("airroot-fuse-");
  mkdirSync(join(dir, "real"));
  symlinkSync(join(dir, "real"), join(dir, "via-link"));
  const m = await mountFuse({ mountpoint: join(dir, "via-link"), files: [memFile("f", new Uint8Array(10))], log });
  live.push(m);
  expect(m.mountpoint).toBe(join(dir, "real"));
  // ioctl with a pointer argument against the real driver: FUSE_DEV_IOC_CLONE of our session fd.
  const clone = openSync("/dev/fuse", "r+");
  try {
    expect(libc.ioctl(clone, FUSE_DEV_IOC_CLONE, new Uint32Array([m.fd]), "/dev/fuse clone")).toBe(0);
  } finally { closeSync(clone); }
  const lone = openSync("/dev/fuse", "r+");
  try {
    expect(() => libc.ioctl(lone, FUSE_DEV_IOC_CLONE, new Uint32Array([lone]), "/dev/fuse clone")).toThrow(/EINVAL|EPERM/);
  } finally { closeSync(lone); }
  expect(mountedUnder(join(dir, "real")).length).toBe(1);
  expect(mountDevice(join(dir, "real"))).toMatch(/^0:\d+$/);
  await m.unmount();
  expect(mountedUnder(dir)).toEqual([]);
});

test("squashfs image served through FUSE, loop-mounted read-only: diff -r is clean", async () => {
  const dir = scratchDir("airroot-fuse-");
  const tree = join(dir, "tree");
  mkdirSync(join(tree, "etc/deep/er"), { recursive: true });
  writeFileSync(join(tree, "etc/hostname"), "node1\n");
  writeFileSync(join(tree, "etc/deep/er/random.bin"), randomBytes(3 * 1024 * 1024 + 17));
  writeFileSync(join(tree, "empty"), "");
  writeFileSync(join(tree, "zeros"), new Uint8Array(2 * 1024 * 1024));
  symlinkSync("etc/hostname", join(tree, "link"));
  for (let i = 0; i < 200; i++) writeFileSync(join(tree, `etc/f${i}`), `file ${i}\n`.repeat(i));
  const img = join(dir, "root.squashfs");
  await runOk(["mksquashfs", tree, img, "-comp", "zstd", "-noappend", "-quiet", "-no-progress"], { timeoutMs: 60_000 });

  // A local-file-backed ExposedFile, like the range engine but without HTTP.
  const fh: FileHandle = await openAsync(img, "r");
  const size = (await fh.stat()).size;
  const file: ExposedFile = {
    name: "root.squashfs", size, mtimeMs: Date.now(),
    async read(offset, length) {
      const buf = new Uint8Array(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await fh.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buf.subarray(0, got);
    },
  };
  const sq = join(dir, "sq");
  mkdirSync(sq);
  const { m, mp } = await mountIn(dir, [file]);
  try {
    await runOk(["mount", "-t", "squashfs", "-o", "loop,ro", join(mp, "root.squashfs"), sq]);
    try {
      const d = await run(["diff", "-r", "--no-dereference", tree, sq], { timeoutMs: 60_000 });
      expect(d.stdout + d.stderr).toBe("");
      expect(d.code).toBe(0);
      expect(await runOk(["readlink", join(sq, "link")])).toBe("etc/hostname\n");
    } finally {
      await run(["umount", sq]);
    }
  } finally {
    await m.unmount();
    await fh.close();
  }
  expect(mountedUnder(dir)).toEqual([]);
}, 120_000);

test("concurrent random reads with out-of-order completion return exactly the right bytes", async () => {
  const dir = scratchDir("airroot-fuse-");
  const data = randomBytes(48 * 1024 * 1024);
  writeFileSync(join(dir, "reference.bin"), data);
  let seed = 7;
  const jitter = () => ((seed = (seed * 1103515245 + 12345) >>> 0) % 4); // 0-3 ms: replies overtake each other
  const { m, mp } = await mountIn(dir, [memFile("r.bin", data, {
    async read(o, l) { await Bun.sleep(jitter()); return data.subarray(o, o + l); },
  })]);
  // The checker is a separate process (this one serves the mount): 32 readers, 1500 random ranges, some direct.
  const checker = join(dir, "check.ts");
  writeFileSync(checker, `
    import { open } from "node:fs/promises";
    import { constants } from "node:fs";
    const [ref, fz] = process.argv.slice(2);
    const a = await open(ref, "r"), b = await open(fz, "r"), c = await open(fz, constants.O_RDONLY | constants.O_DIRECT);
    const size = (await a.stat()).size;
    let s = 99, bad = 0, n = 0;
    const rnd = (k) => ((s = (s * 1103515245 + 12345) >>> 0) % k);
    async function one() {
      const direct = rnd(4) === 0;
      // O_DIRECT wants aligned offsets and sizes
      const len = direct ? (1 + rnd(512)) * 4096 : 1 + rnd(3 * 1024 * 1024);
      const off = direct ? rnd(Math.floor((size - len) / 4096)) * 4096 : rnd(size - len + 2000);
      const x = Buffer.alloc(len), y = direct ? Buffer.from(new ArrayBuffer(len + 4096), 0, len) : Buffer.alloc(len);
      const r1 = await a.read(x, 0, len, off);
      const r2 = await (direct ? c : b).read(y, 0, len, off);
      n++;
      if (r1.bytesRead !== r2.bytesRead || Buffer.compare(x.subarray(0, r1.bytesRead), y.subarray(0, r2.bytesRead)) !== 0) {
        bad++; console.error("mismatch at", off, len, direct, r1.bytesRead, r2.bytesRead);
      }
    }
    const workers = Array.from({ length: 32 }, async () => { for (let i = 0; i < 47; i++) await one(); });
    await Promise.all(workers);
    console.log(bad === 0 ? "OK " + n : "BAD " + bad);
  `);
  const r = await run([process.execPath, checker, join(dir, "reference.bin"), join(mp, "r.bin")], { timeoutMs: 120_000 });
  expect(r.stderr).toBe("");
  expect(r.stdout.trim()).toBe("OK 1504");
  // The checker's reads run on Bun's small fs thread pool, so only a few overlap; enough to complete out of order.
  expect(m.stats().maxReadsInFlight).toBeGreaterThanOrEqual(2);
}, 150_000);

test("a read failing with an errno reaches the reader as EIO; other rejections too", async () => {
  const dir = scratchDir("airroot-fuse-");
  const data = randomBytes(4 * 1024 * 1024);
  const bad = (why: "errno" | "plain"): ExposedFile => memFile(`bad-${why}`, data, {
    async read(o, l) {
      if (o + l > 1024 * 1024 && o < 2 * 1024 * 1024)
        throw why === "errno" ? Object.assign(new Error("all sources down"), { errno: 5 }) : new Error("boom");
      return data.subarray(o, o + l);
    },
  });
  const { mp } = await mountIn(dir, [bad("errno"), bad("plain")]);
  for (const name of ["bad-errno", "bad-plain"]) {
    const ok = await run(["dd", `if=${join(mp, name)}`, "of=/dev/null", "bs=64k", "count=4", "iflag=direct"]);
    expect(ok.code).toBe(0);
    const r = await run(["dd", `if=${join(mp, name)}`, "of=/dev/null", "bs=64k", "skip=20", "count=4", "iflag=direct"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("Input/output error");
    const c = await run(["cat", join(mp, name)]);
    expect(c.code).not.toBe(0);
    expect(c.stderr).toContain("Input/output error");
  }
  expect(logs.some((l) => l.includes("read of bad-errno") && l.includes("all sources down"))).toBe(true);
}, 60_000);

test("many reads in flight, 1 MiB requests", async () => {
  const dir = scratchDir("airroot-fuse-");
  const data = randomBytes(64 * 1024 * 1024);
  const lengths: number[] = [];
  const slow = memFile("slow", data, {
    async read(o, l) {
      lengths.push(l);
      await Bun.sleep(100); // a slow network: requests must overlap
      return data.subarray(o, o + l);
    },
  });
  const { m, mp } = await mountIn(dir, [slow]);
  // 16 parallel direct readers of 2 MiB each, plus one 8 MiB direct read that async DIO splits into 1 MiB requests.
  const jobs = Array.from({ length: 16 }, (_, i) =>
    runOk(["dd", `if=${join(mp, "slow")}`, "of=/dev/null", "bs=1M", "count=2", `skip=${i * 2}`, "iflag=direct"]));
  jobs.push(runOk(["dd", `if=${join(mp, "slow")}`, "of=/dev/null", "bs=8M", "count=1", "skip=5", "iflag=direct"]));
  const t0 = performance.now();
  await Promise.all(jobs);
  const ms = performance.now() - t0;
  const st = m.stats();
  expect(st.maxReadsInFlight).toBeGreaterThanOrEqual(8);
  expect(st.readsInFlight).toBe(0);
  expect(Math.max(...lengths)).toBe(1024 * 1024);
  expect(st.negotiatedMaxRead).toBe(1024 * 1024);
  // 40 reads of 100 ms each, serially, would take 4 s.
  expect(ms).toBeLessThan(3000);
  // A readahead-driven sequential read through the page cache also gets 1 MiB requests.
  lengths.length = 0;
  await runOk(["dd", `if=${join(mp, "slow")}`, "of=/dev/null", "bs=4M", "count=4", "skip=8"]);
  expect(Math.max(...lengths)).toBe(1024 * 1024);
}, 60_000);

test("busy mount: unmount detaches lazily and `closed` resolves when the last user leaves", async () => {
  const dir = scratchDir("airroot-fuse-");
  const { m, mp } = await mountIn(dir, [memFile("f", new Uint8Array(4096))]);
  // A process that keeps the file open for a moment.
  const holder = Bun.spawn(["sh", "-c", `exec 3<${join(mp, "f")}; sleep 1.5`]);
  await Bun.sleep(300);
  const t0 = performance.now();
  await m.unmount();
  expect(mountedUnder(mp)).toEqual([]); // detached from the namespace at once
  expect(logs.some((l) => l.includes("detaching it lazily"))).toBe(true);
  await m.closed;
  expect(performance.now() - t0).toBeGreaterThan(500);
  await holder.exited;
}, 30_000);

test("abort: a hung read is failed with ENOTCONN, the session ends, unmount removes the stale mount", async () => {
  const dir = scratchDir("airroot-fuse-");
  const never: ExposedFile = memFile("hang", new Uint8Array(1 << 20), { read: () => new Promise<Uint8Array>(() => {}) });
  const { m, mp } = await mountIn(dir, [never]);
  const reader = run(["dd", `if=${join(mp, "hang")}`, "of=/dev/null", "bs=4k", "count=1", "iflag=direct"], { timeoutMs: 20_000 });
  for (let i = 0; i < 100 && m.stats().readsInFlight === 0; i++) await Bun.sleep(20);
  expect(m.stats().readsInFlight).toBe(1);
  m.abort();
  const r = await reader;
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/Transport endpoint is not connected|Software caused connection abort/);
  await m.closed;
  expect(mountedUnder(mp).length).toBe(1); // still listed, but dead
  await m.unmount();
  expect(mountedUnder(mp)).toEqual([]);
}, 30_000);

test("clear errors: missing mountpoint, bad options, bad files", async () => {
  const dir = scratchDir("airroot-fuse-");
  await expect(mountFuse({ mountpoint: join(dir, "nope"), files: [] })).rejects.toThrow(/mountpoint .*nope is not usable/);
  writeFileSync(join(dir, "afile"), "");
  await expect(mountFuse({ mountpoint: join(dir, "afile"), files: [] })).rejects.toThrow(/not a directory/);
  mkdirSync(join(dir, "m"));
  await expect(mountFuse({ mountpoint: join(dir, "m"), files: [], subtype: "x,dev" })).rejects.toThrow(/subtype/);
  await expect(mountFuse({ mountpoint: join(dir, "m"), files: [], fsname: "two\nlines" })).rejects.toThrow(/fsname/);
  await expect(mountFuse({ mountpoint: join(dir, "m"), files: [memFile("a/b", new Uint8Array(1))] }))
    .rejects.toThrow(/not a valid file name/);
  expect(mountedUnder(dir)).toEqual([]);
});

test("nothing left mounted", () => {
  expect(mountedUnder("/tmp/airroot-fuse-")).toEqual([]);
});
