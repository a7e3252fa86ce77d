// Background fill and untethering (issue 15 §3) through the built binary against the real kernel: nginx on loopback
// (two serving the image, one a copy with corrupted chunks and the same ETag), a real squashfs with a signed manifest,
// `airroot mount --fill`, the real loop device switched with LOOP_CHANGE_FD, and squashfs on top.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join, relative } from "node:path";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, writeFileSync } from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { makeTestPki, type TestPki } from "../helpers/pki";
import { startNginx, type Nginx, type NginxOptions } from "../helpers/nginx";
import { freePort } from "../helpers/ports";
import { signImage, tamperedCopy, type SignedManifest } from "../helpers/signed-image";
import { fetchStatus, formatStatus, statusLogPath, type DaemonStatus } from "../../src/mount/status";
import { waitUntethered } from "../../src/boot/reporter";

const airroot = join(import.meta.dir, "..", "..", "dist", "airroot");
const dir = scratchDir("airroot-fill-");
const MiB = 1048576;
let pki: TestPki;
let signed: SignedManifest;
let image: string, tree: string, imageSha: string, keyFile: string;
const good: Nginx[] = [];
let bad: Nginx | undefined;
const mounts: string[] = [];   // FUSE and squashfs mount points, unmounted in reverse order
const loops: string[] = [];

function sh(cmd: string[], timeout = 60_000) {
  const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}
const isMounted = (mp: string) => readFileSync("/proc/self/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === mp);
const sha256File = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");

async function waitFor<T>(what: string, get: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try { const v = await get(); if (v !== undefined) return v; } catch (e) { last = e; }
    await Bun.sleep(100);
  }
  for (const mp of mounts) if (existsSync(statusLogPath(mp))) console.log(`--- ${statusLogPath(mp)}:\n${readFileSync(statusLogPath(mp), "utf8").split("\n").slice(-30).join("\n")}`);
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${(last as Error).message})` : ""}`);
}

/** Good server i; started again later on the same port (same URL), as a server coming back. */
const goodOpts: NginxOptions[] = [];
async function startGood(i: number): Promise<Nginx> {
  const host = `127.0.0.${2 + i}`;
  goodOpts[i] ??= { root: join(dir, "www"), listen: [{ host, port: await freePort(host) }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, `ng${i}`) };
  return startNginx(goodOpts[i]!);
}

/** `airroot mount` (detached) of the image from `urls` at a new mount point, with extra options. */
async function mount(name: string, urls: string[], extra: string[]): Promise<{ mp: string; file: string }> {
  const mp = join(dir, name);
  mkdirSync(mp);
  const m = sh([airroot, "mount", "--ca", pki.caCert, "--manifest", signed.manifest, "--image-key", keyFile, ...extra, ...urls, mp]);
  if (m.code !== 0) throw new Error(`airroot mount failed: ${m.err}`);
  mounts.push(mp);
  return { mp, file: join(mp, "root.sfs") };
}

/** losetup -r (read-only, as init's attachLoop) and squashfs on top. */
function loopMount(file: string, name: string): { dev: string; root: string } {
  const l = sh(["losetup", "-r", "-f", "--show", file]);
  if (l.code !== 0) throw new Error(`losetup: ${l.err}`);
  const dev = l.out.trim();
  loops.push(dev);
  const root = join(dir, name);
  mkdirSync(root);
  const m = sh(["mount", "-t", "squashfs", "-o", "ro", dev, root]);
  if (m.code !== 0) throw new Error(`mount ${dev}: ${m.err}`);
  mounts.push(root);
  return { dev, root };
}

function unmountAll() {
  for (const mp of mounts.splice(0).reverse()) if (isMounted(mp)) sh(["umount", "-l", mp]);
  for (const l of loops.splice(0)) sh(["losetup", "-d", l]);
}

const filled = (st: DaemonStatus) => st.fill && st.fill.size > 0 ? st.fill.filledBytes / st.fill.size : 0;

beforeAll(async () => {
  if (!existsSync(airroot)) throw new Error(`${airroot} is missing: run \`make\` (make test builds it first)`);
  tree = join(dir, "tree");
  mkdirSync(join(tree, "data"), { recursive: true });
  for (let i = 0; i < 12; i++) writeFileSync(join(tree, "data", `r${i}.bin`), randomBytes(4 * MiB + 7777 * i));
  sh(["cp", "-a", "/usr/share/doc", join(tree, "doc")]);
  mkdirSync(join(dir, "www"));
  mkdirSync(join(dir, "www-bad"));
  image = join(dir, "www", "root.sfs");
  const mk = sh(["mksquashfs", tree, image, "-comp", "zstd", "-noappend", "-quiet", "-no-progress"]);
  if (mk.code !== 0) throw new Error(`mksquashfs failed: ${mk.err}`);
  imageSha = sha256File(image);
  signed = signImage(image, join(dir, "state"), join(dir, "root.manifest"));
  keyFile = join(dir, "image-key.pem");
  writeFileSync(keyFile, signed.publicKeyPem);
  // The bad server: same bytes except one in each of 8 chunks, same size and mtime (so the same ETag).
  tamperedCopy(image, join(dir, "www-bad", "root.sfs"), [1, 3, 5, 9, 17, 33, 65, 100].filter((c) => c < signed.chunks), signed.chunkSize);
  pki = makeTestPki(join(dir, "pki"));
  good.push(await startGood(0), await startGood(1));
  const host = "127.0.0.5";
  bad = await startNginx({ root: join(dir, "www-bad"), listen: [{ host, port: await freePort(host) }], cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, "ngbad") });
}, 180_000);

afterAll(async () => {
  unmountAll();
  for (const s of [...good, bad]) await s?.stop().catch(() => {});
  removeScratchDirs();
}, 60_000);

describe("airroot mount --fill", () => {
  test("fills a verified copy (a corrupted chunk is refused and refetched), reports progress, pauses without servers and resumes", async () => {
    const copy = join(dir, "copy-a.img");
    // The bad server first in turn for many chunks: every bad chunk is refused (bad chunks seen) and fetched elsewhere.
    const urls = [bad!.urlFor("root.sfs"), ...good.map((g) => g.urlFor("root.sfs"))];
    const { mp, file } = await mount("ma", urls, ["--fill", copy, "--fill-rate", "8", "--untether-loop", "off"]);
    // Some progress, then every server goes away.
    await waitFor("10% filled", async () => { const st = await fetchStatus(mp); return filled(st) >= 0.1 ? st : undefined; }, 30_000);
    for (const s of [...good.splice(0), bad!]) await s.stop();
    bad = undefined;
    const paused = await waitFor("the fill to pause", async () => { const st = await fetchStatus(mp); return st.fill!.state === "paused" ? st : undefined; }, 30_000);
    console.log(formatStatus(paused));
    const at = paused.fill!.filledBytes;
    await Bun.sleep(2000);
    expect((await fetchStatus(mp)).fill!.filledBytes).toBe(at); // nothing moves while paused
    expect(at).toBeLessThan(paused.fill!.size);
    // The servers come back (same ports): the fill resumes where it was and completes.
    good.push(await startGood(0), await startGood(1));
    const t0 = Date.now();
    const done = await waitFor("the fill to complete", async () => { const st = await fetchStatus(mp); return st.fill!.state === "complete" ? st : undefined; }, 90_000);
    console.log(`resumed and completed ${((Date.now() - t0) / 1000).toFixed(1)} s after the servers came back`);
    console.log(formatStatus(done));
    expect(done.fill!.filledBytes).toBe(statSync(image).size);
    expect(done.verified!.badChunks).toBeGreaterThan(0);
    expect(sha256File(copy)).toBe(imageSha);
    expect(formatStatus(done)).toContain("filled 100.0%");
    // Reads through the mount now come from the verified copy: with every server gone, the whole file reads back
    // right and nothing more is fetched.
    for (const s of good.splice(0)) await s.stop();
    expect(sha256File(file)).toBe(imageSha);
    const after = await fetchStatus(mp);
    expect(after.image.bytesFetched).toBe(done.image.bytesFetched);
    expect(after.fill!.readFromCopyBytes).toBeGreaterThan(statSync(image).size / 2); // the rest: the daemon's block cache
    console.log(formatStatus(after).split("\n").find((l) => l.startsWith("fill ")));
    good.push(await startGood(0), await startGood(1));
  }, 180_000);

  test("a demand read during the fill is served; latency with and without the fill", async () => {
    const urls = good.map((g) => g.urlFor("root.sfs"));
    const size = statSync(image).size;
    const offsets = Array.from({ length: 40 }, (_, i) => Math.floor(((i * 7919) % 40) * (size - 256 * 1024) / 40));
    const timeReads = (file: string) => {
      const fd = openSync(file, "r");
      const buf = Buffer.alloc(64 * 1024);
      const ms: number[] = [];
      try {
        for (const off of offsets) {
          const t = performance.now();
          expect(readSync(fd, buf, 0, buf.length, off)).toBe(buf.length);
          ms.push(performance.now() - t);
        }
      } finally { closeSync(fd); }
      return ms.sort((a, b) => a - b);
    };
    const plain = await mount("mb", urls, []);
    const without = timeReads(plain.file);
    const filling = await mount("mc", urls, ["--fill", join(dir, "copy-c.img"), "--fill-rate", "30", "--untether-loop", "off"]);
    await waitFor("the fill to run", async () => { const st = await fetchStatus(filling.mp); return st.fill!.fetchedBytes > 0 ? st : undefined; }, 30_000);
    const during = timeReads(filling.file);
    const st = await fetchStatus(filling.mp);
    expect(st.fill!.state).not.toBe("complete"); // measured while the fill ran
    const q = (a: number[], p: number) => a[Math.min(a.length - 1, Math.floor(p * a.length))]!.toFixed(2);
    console.log(`64 KiB demand reads at 40 offsets, ms: without fill p50 ${q(without, 0.5)} p90 ${q(without, 0.9)} max ${q(without, 1)}; ` +
      `during fill (30 MB/s cap, ${(filled(st) * 100).toFixed(0)}% at the end) p50 ${q(during, 0.5)} p90 ${q(during, 0.9)} max ${q(during, 1)}`);
    expect(during[Math.floor(during.length / 2)]!).toBeLessThan(1000);
  }, 120_000);

  test("disk:DEV larger than the image: the loop device is capped to the image (lo_sizelimit) and switched", async () => {
    const urls = good.map((g) => g.urlFor("root.sfs"));
    const backing = join(dir, "disk.img");
    writeFileSync(backing, "");
    sh(["truncate", "-s", String(statSync(image).size + 3 * MiB), backing]);
    const disk = sh(["losetup", "-f", "--show", backing]).out.trim(); // the "local disk" (writable)
    expect(disk).toMatch(/^\/dev\/loop\d+$/);
    loops.push(disk);
    const { mp, file } = await mount("me", urls, ["--fill", `disk:${disk}`]);
    const { dev, root } = loopMount(file, "re");
    const st = await waitFor("untethered on the disk", async () => { const s = await fetchStatus(mp); return s.fill?.untether?.loops.length ? s : undefined; }, 60_000);
    console.log(formatStatus(st).split("\n").filter((l) => l.startsWith("fill") || l.startsWith("untethered")).join("\n"));
    const name = dev.replace("/dev/", "");
    expect(readFileSync(`/sys/block/${name}/loop/backing_file`, "utf8").trim()).toBe(disk);
    expect(Number(readFileSync(`/sys/block/${name}/loop/sizelimit`, "utf8").trim())).toBe(statSync(image).size);
    const sum = sh(["timeout", "-s", "KILL", "30", "bash", "-c", `head -c ${statSync(image).size} "$0" | sha256sum`, disk]);
    expect(sum.out.slice(0, 64)).toBe(imageSha);
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    const f = sh(["timeout", "-s", "KILL", "30", "sha256sum", join(root, "data", "r3.bin")]);
    expect(f.out.slice(0, 64)).toBe(sha256File(join(tree, "data", "r3.bin")));
  }, 120_000);

  test("untethers the loop device (LOOP_CHANGE_FD): with every server gone and caches dropped, every file reads back right", async () => {
    const urls = good.map((g) => g.urlFor("root.sfs"));
    const copy = join(dir, "copy-d.img");
    const { mp, file } = await mount("md", urls, ["--fill", copy, "--fill-rate", "20"]);
    const { dev, root } = loopMount(file, "rd");
    const t0 = Date.now();
    const st = await waitFor("untethered", async () => { const s = await fetchStatus(mp); return s.fill?.untether?.loops.length ? s : undefined; }, 60_000);
    console.log(`untethered ${((Date.now() - t0) / 1000).toFixed(1)} s after the loop mount`);
    console.log(formatStatus(st));
    expect(st.fill!.untether!.loops[0]!.dev).toBe(dev);
    expect(formatStatus(st)).toContain("untethered");
    // What the boot reporter waits for before it reports the stage "untethered".
    expect(await waitUntethered(mp, 10_000, (l) => console.log(l))).toContain(`${dev} reads the local copy ${copy}`);
    const name = dev.replace("/dev/", "");
    expect(readFileSync(`/sys/block/${name}/loop/backing_file`, "utf8").trim()).toBe(copy);
    console.log(`/sys/block/${name}/loop/dio = ${readFileSync(`/sys/block/${name}/loop/dio`, "utf8").trim()}`);
    expect(sha256File(copy)).toBe(imageSha);
    // No server at all from now on.
    for (const s of good.splice(0)) await s.stop();
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    const sums = sh(["timeout", "-s", "KILL", "60", "bash", "-c", `cd "$0" && find . -type f -print0 | sort -z | xargs -0 sha256sum`, root], 70_000);
    expect(sums.code).toBe(0);
    const got = new Map(sums.out.trim().split("\n").map((l) => [l.slice(66).replace(/^\.\//, ""), l.slice(0, 64)] as const));
    const want = new Map<string, string>();
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) want.set(relative(tree, p), sha256File(p));
      }
    };
    walk(tree);
    expect(got.size).toBe(want.size);
    for (const [p, h] of want) expect(`${p} ${got.get(p)}`).toBe(`${p} ${h}`);
    console.log(`${want.size} files read back right with no server`);
    // The mount's own file still answers from the engine's state; the node needs none of it.
    const before = await fetchStatus(mp);
    expect(before.fill!.state).toBe("complete");
    // The daemon killed (kill -9): the holder starts the next one, which finds the copy, verifies every chunk of it
    // against the manifest (nothing fetched) and is complete again. (A new daemon opens the image on a server first:
    // with every server gone it waits for one; an untethered root does not need it meanwhile.)
    good.push(await startGood(0), await startGood(1));
    process.kill(before.pid, "SIGKILL");
    const again = await waitFor("the next daemon's fill", async () => {
      const s = await fetchStatus(mp).catch(() => undefined);
      return s && s.pid !== before.pid && s.fill?.state === "complete" ? s : undefined;
    }, 60_000);
    expect(again.holder!.restarts).toBe(1);
    const imageSize = statSync(image).size;
    expect(again.fill!.reusedBytes).toBe(imageSize);
    expect(again.fill!.fetchedBytes).toBe(0);
    expect(readFileSync(`/sys/block/${name}/loop/backing_file`, "utf8").trim()).toBe(copy); // nothing to switch again
    console.log(`after kill -9: daemon ${again.pid} re-verified the copy (${(imageSize / 1048576).toFixed(1)} MiB), complete`);
  }, 180_000);
});

