// image pack (real mksquashfs/unsquashfs), the image key, the store records and gc.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { scratchDir, removeScratchDirs } from "../helpers/tmp";
import { openDatabase, type Db } from "../../src/server/store/db";
import { getProfile, imagesBootedSince, listImages, profileHistory, recordBoot } from "../../src/server/store/images";
import { packImage } from "../../src/image/pack";
import { gcImages } from "../../src/image/gc";
import { ensureImageKey, readImagePublicKey } from "../../src/image/keys";
import { loadManifest } from "../../src/image/manifest";
import { imageFile, manifestFile, imagesDir } from "../../src/image/paths";
import { manifestVerifier } from "../../src/image/verify";
import { makeTree } from "./tree";

afterAll(removeScratchDirs);

const sha = (p: string) => createHash("sha256").update(readFileSync(p)).digest("hex");

describe("image key", () => {
  test("created once with 0700 dir and 0600 key; the public half is restored if lost", () => {
    const state = join(scratchDir(), "state");
    const p = ensureImageKey(state);
    expect(p.created).toBe(true);
    expect(statSync(join(state, "keys")).mode & 0o777).toBe(0o700);
    expect(statSync(p.privateKey).mode & 0o777).toBe(0o600);
    const pub = readFileSync(p.publicKey, "utf8");
    expect(pub).toContain("BEGIN PUBLIC KEY");
    expect(ensureImageKey(state).created).toBe(false);
    expect(readFileSync(p.publicKey, "utf8")).toBe(pub); // idempotent
    require("node:fs").unlinkSync(p.publicKey);
    expect(ensureImageKey(state).created).toBe(false); // restored from the private key: still the old key
    expect(readFileSync(p.publicKey, "utf8")).toBe(pub);
    require("node:fs").unlinkSync(p.privateKey);
    expect(() => ensureImageKey(state)).toThrow(/restore the private key/);
  });
});

describe("image pack", () => {
  const base = scratchDir();
  const state = join(base, "state");
  const tree = makeTree(join(base, "root"));
  let db: Db;
  beforeAll(async () => { db = await openDatabase((mkdirSync(state, { recursive: true }), state)); });
  afterAll(async () => { await db.close(); });
  const t1 = new Date("2026-11-01T00:00:00Z");

  test("packs, stores content-addressed, signs, and points the profile at it", async () => {
    const lines: string[] = [];
    const r = await packImage({ rootDir: tree, profile: "compute", stateDir: state, db, now: () => t1, log: (l) => lines.push(l) });
    expect(lines.some((l) => l.includes("mksquashfs"))).toBe(true);
    expect(r.reused).toBe(false);
    const file = imageFile(state, r.digest);
    expect(sha(file)).toBe(r.digest);
    expect(statSync(file).size).toBe(r.size);
    const m = loadManifest(readFileSync(manifestFile(state, r.digest)), readImagePublicKey(state), { expectDigest: r.digest, expectSize: r.size });
    expect(m).toEqual(r.manifest);
    expect(m.chunkSize).toBe(256 * 1024);
    expect(m.profile).toBe("compute");
    expect(m.created).toBe(t1.toISOString());
    // every chunk of the stored file verifies
    const bytes = readFileSync(file), v = manifestVerifier(m);
    for (let i = 0; i < m.chunks.length; i++) expect(v.verify(i, bytes.subarray(i * m.chunkSize, (i + 1) * m.chunkSize))).toBe(true);
    expect((await getProfile(db, "compute"))?.digest).toBe(r.digest);
    expect(readdirSync(imagesDir(state)).sort()).toEqual([`${r.digest}.manifest`, `${r.digest}.sfs`]); // no temp left
    // the image holds the tree with owners, modes, mtimes and links intact (real unsquashfs)
    const out = join(base, "unpacked");
    const u = Bun.spawnSync(["unsquashfs", "-d", out, file], { stdout: "pipe", stderr: "pipe" });
    expect(u.exitCode).toBe(0);
    expect(Bun.spawnSync(["diff", "-r", "--no-dereference", tree, out]).exitCode).toBe(0);
    expect(statSync(join(out, "var/lib/svc/state")).uid).toBe(33);
    expect(statSync(join(out, "usr/bin/tool")).mode & 0o7777).toBe(0o4755);
    expect(statSync(join(out, "usr/bin/tool")).mtime.toISOString()).toBe("2026-01-01T00:00:00.000Z");
  });

  test("re-packing the same tree is reproducible and reuses the image", async () => {
    const first = (await getProfile(db, "compute"))!.digest;
    const r = await packImage({ rootDir: tree, profile: "compute", stateDir: state, db, now: () => new Date("2026-11-02T00:00:00Z") });
    expect(r.digest).toBe(first);
    expect(r.reused).toBe(true);
    // the manifest is never rewritten: it still carries the first pack's time
    expect(readFileSync(manifestFile(state, first), "utf8")).toContain(t1.toISOString());
    expect(r.manifest.created).toBe(t1.toISOString());
    // same tree under another profile: same image
    const g = await packImage({ rootDir: tree, profile: "gpu", stateDir: state, db });
    expect(g.digest).toBe(first);
    expect((await getProfile(db, "gpu"))?.digest).toBe(first);
  });

  test("a changed tree gives a new image; the old one stays for running nodes", async () => {
    const old = (await getProfile(db, "compute"))!.digest;
    writeFileSync(join(tree, "etc/hostname"), "changed\n");
    const r = await packImage({ rootDir: tree, profile: "compute", stateDir: state, db, now: () => new Date("2026-11-03T00:00:00Z") });
    expect(r.digest).not.toBe(old);
    expect(existsSync(imageFile(state, old))).toBe(true);
    expect((await getProfile(db, "compute"))?.digest).toBe(r.digest);
    expect((await profileHistory(db, "compute")).map((h) => h.digest)).toEqual([r.digest, old, old]);
    expect((await listImages(db)).length).toBe(2);
  });

  test("bad input: missing tree, bad profile name, bad chunk size are refused and leave nothing behind", async () => {
    await expect(packImage({ rootDir: join(base, "nope"), profile: "x", stateDir: state, db })).rejects.toThrow(/not a directory/);
    await expect(packImage({ rootDir: tree, profile: "../etc", stateDir: state, db })).rejects.toThrow(/invalid profile name/);
    const unreadable = join(base, "file-not-dir");
    writeFileSync(unreadable, "x");
    await expect(packImage({ rootDir: unreadable, profile: "x", stateDir: state, db })).rejects.toThrow(/not a directory/);
    await expect(packImage({ rootDir: tree, profile: "x", stateDir: state, db, chunkSize: 1000 })).rejects.toThrow(/power of two/);
    expect(readdirSync(imagesDir(state)).filter((n) => n.startsWith("."))).toEqual([]);
  });

  test("gc keeps current images, recent packs and recently booted images; removes the rest", async () => {
    const cur = (await getProfile(db, "compute"))!.digest;
    const old = (await listImages(db)).find((i) => i.digest !== cur)!.digest; // still current for "gpu"
    // move "gpu" off the old image so only boots/grace protect it
    await packImage({ rootDir: tree, profile: "gpu", stateDir: state, db, now: () => new Date("2026-11-03T00:00:00Z") });
    const oldCreated = (await listImages(db)).find((i) => i.digest === old)!.created;
    const day = 86_400_000;
    writeFileSync(join(imagesDir(state), ".pack-deadbeef.sfs"), "leftover");
    utimesSync(join(imagesDir(state), ".pack-deadbeef.sfs"), new Date(oldCreated), new Date(oldCreated));

    let r = await gcImages({ stateDir: state, db, now: oldCreated + day, dryRun: true }); // within 7 d of packing
    expect(r.removed).toEqual([]);
    expect(r.kept.find((k) => k.digest === old)?.why).toMatch(/packed within/);

    const now = oldCreated + 30 * day;
    await recordBoot(db, "n1", old, now - 2 * day);
    expect(await imagesBootedSince(db, now - 7 * day)).toEqual([old]);
    r = await gcImages({ stateDir: state, db, now });
    expect(r.removed).toEqual([]);
    expect(r.kept.find((k) => k.digest === old)?.why).toMatch(/booted/);
    expect(r.tmpRemoved).toEqual([".pack-deadbeef.sfs"]);

    r = await gcImages({ stateDir: state, db, now: now + 10 * day, dryRun: true });
    expect(r.removed).toEqual([old]);
    expect(existsSync(imageFile(state, old))).toBe(true); // dry run
    r = await gcImages({ stateDir: state, db, now: now + 10 * day, graceMs: 0 });
    expect(r.removed).toEqual([old]);
    expect(r.bytesFreed).toBeGreaterThan(0);
    expect(existsSync(imageFile(state, old)) || existsSync(manifestFile(state, old))).toBe(false);
    expect(existsSync(imageFile(state, cur))).toBe(true); // current is never removed, even with grace 0
    expect((await listImages(db)).map((i) => i.digest)).toEqual([cur]);

    // files without a record (interrupted gc, lost rows) are swept once older than the grace period
    const orphan = join(imagesDir(state), `${"c".repeat(64)}.sfs`);
    writeFileSync(orphan, "orphan");
    expect((await gcImages({ stateDir: state, db, now: Date.now() })).tmpRemoved).toEqual([]); // fresh: could be a pack in flight
    utimesSync(orphan, new Date(oldCreated), new Date(oldCreated));
    expect((await gcImages({ stateDir: state, db, now: Date.now() })).tmpRemoved).toEqual([`${"c".repeat(64)}.sfs`]);
    expect(existsSync(orphan)).toBe(false);
    expect(existsSync(imageFile(state, cur))).toBe(true);
  });

  test("a damaged stored manifest is replaced by a re-pack", async () => {
    const cur = (await getProfile(db, "compute"))!.digest;
    const mf = manifestFile(state, cur);
    writeFileSync(mf, readFileSync(mf, "utf8").replace('"format":1', '"format":1 '));
    const lines: string[] = [];
    await packImage({ rootDir: tree, profile: "compute", stateDir: state, db, log: (l) => lines.push(l) });
    expect(lines.some((l) => l.includes("replacing the stored manifest") && l.includes("bad signature"))).toBe(true);
    expect(loadManifest(readFileSync(mf), readImagePublicKey(state)).digest).toBe(cur);
  });

  test("a stored image damaged on disk is replaced by a re-pack, not trusted", async () => {
    const cur = (await getProfile(db, "compute"))!.digest;
    const f = imageFile(state, cur);
    const bytes = readFileSync(f);
    bytes[100] ^= 0xff;
    writeFileSync(f, bytes);
    const lines: string[] = [];
    const r = await packImage({ rootDir: tree, profile: "compute", stateDir: state, db, log: (l) => lines.push(l) });
    expect(r.digest).toBe(cur);
    expect(r.reused).toBe(false);
    expect(lines.some((l) => l.includes("damaged on disk"))).toBe(true);
    expect(sha(f)).toBe(cur);
  });
});
