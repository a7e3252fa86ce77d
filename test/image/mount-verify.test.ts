// `airroot mount --manifest URL --image-key PUBKEY` over mirrors made by mirror-config: a packed image whose chunks
// are verified before the kernel sees them (one mirror has a corrupted chunk), loop-mounted and diffed against the
// tree; a manifest with a bad signature or from another key refuses the mount.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { generateKeyPairSync } from "node:crypto";
import { removeScratchDirs } from "../helpers/tmp";
import type { TestPki } from "../helpers/pki";
import { freePort } from "../helpers/ports";
import { packedImage, runToFiles } from "../helpers/packed-image";
import { startApache } from "../helpers/apache";
import { startNginxSite } from "../helpers/nginx-site";
import type { PackResult } from "../../src/image/pack";
import { imageKeyPaths } from "../../src/image/keys";
import { imagesDir, imageFile, manifestFile } from "../../src/image/paths";
import { mirrorConfig } from "../../src/server/mirror";
import { serveImages } from "../../src/server/static";

setDefaultTimeout(120_000);

const cli = [process.execPath, join(import.meta.dir, "..", "..", "src", "cli", "main.ts")];
const BAD_CHUNK = 3;
let base = "", pki: TestPki, packed: PackResult, tree = "", state = "";
const url = { nginx: "", badApache: "", tampered: "" };
const stops: (() => Promise<void> | void)[] = [];
const mounts: string[] = [];
const pids: number[] = [];

const isMounted = (mp: string) => readFileSync("/proc/self/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === mp);
const sh = (cmd: string[], timeoutMs?: number) => runToFiles(base, cmd, timeoutMs);

beforeAll(async () => {
  ({ base, pki, state, tree, packed } = await packedImage(6 * 1024 * 1024 + 99));
  expect(packed.manifest.chunks.length).toBeGreaterThan(BAD_CHUNK);

  // Mirror B: a copy with one flipped byte in one chunk (same name, size and ETag: only the hashes can tell).
  const bad = join(base, "bad");
  mkdirSync(imagesDir(bad), { recursive: true, mode: 0o755 });
  chmodSync(bad, 0o755);
  const bytes = readFileSync(imageFile(state, packed.digest));
  bytes[BAD_CHUNK * packed.manifest.chunkSize + 1000] ^= 0x01;
  writeFileSync(imageFile(bad, packed.digest), bytes, { mode: 0o644 });
  copyFileSync(manifestFile(state, packed.digest), manifestFile(bad, packed.digest));
  chmodSync(manifestFile(bad, packed.digest), 0o644);

  // Server T (airroot's own handler): a good image but a manifest altered after signing.
  const tampered = join(base, "tampered");
  mkdirSync(imagesDir(tampered), { recursive: true });
  copyFileSync(imageFile(state, packed.digest), imageFile(tampered, packed.digest));
  const text = readFileSync(manifestFile(state, packed.digest), "utf8");
  writeFileSync(manifestFile(tampered, packed.digest), text.replace(packed.manifest.chunks[0], packed.manifest.chunks[1]));

  const [pn, pb, pt] = [await freePort("127.0.0.2"), await freePort("127.0.0.3"), await freePort("127.0.0.4")];
  const tls = { cert: pki.serverCert, key: pki.serverKey };
  const ng = await startNginxSite({ workDir: join(base, "ng"), waitFor: [{ host: "127.0.0.2", port: pn }],
    siteConfig: mirrorConfig("nginx", { stateDir: state, listen: [`127.0.0.2:${pn}`], ...tls }) });
  stops.push(() => ng.stop());
  const ap = await startApache({ workDir: join(base, "ap"), waitFor: [{ host: "127.0.0.3", port: pb }],
    siteConfig: mirrorConfig("apache", { stateDir: bad, listen: [`127.0.0.3:${pb}`], ...tls }) });
  stops.push(() => ap.stop());
  const own = Bun.serve({ hostname: "127.0.0.4", port: pt, tls: { cert: Bun.file(pki.serverCert), key: Bun.file(pki.serverKey) },
    fetch: async (req) => (await serveImages(req, imagesDir(tampered))) ?? new Response("not found\n", { status: 404 }) });
  stops.push(() => own.stop(true));
  url.nginx = `https://127.0.0.2:${pn}/images/${packed.digest}`;
  url.badApache = `https://127.0.0.3:${pb}/images/${packed.digest}`;
  url.tampered = `https://127.0.0.4:${pt}/images/${packed.digest}`;
});

afterAll(async () => {
  // Unmounting the FUSE mount ends its daemon too; lazy unmount only if a plain one fails.
  for (const mp of mounts.reverse()) {
    if (isMounted(mp) && Bun.spawnSync(["umount", mp]).exitCode !== 0) Bun.spawnSync(["umount", "-l", mp]);
  }
  for (const pid of pids) { try { process.kill(pid, "SIGTERM"); } catch { /* already gone */ } }
  for (const s of stops.reverse()) { try { await s(); } catch { /* keep going */ } }
  removeScratchDirs();
});

describe("airroot mount with a signed manifest", () => {
  test("verifies every chunk: the corrupted mirror is caught, the tree reads back identical", async () => {
    const mnt = join(base, "m1"), root = join(base, "r1");
    mkdirSync(mnt); mkdirSync(root);
    // The corrupted mirror is listed first, so reads go to it until a chunk fails verification.
    const m = await sh([...cli, "mount", "--ca", pki.caCert, "--manifest", `${url.nginx}.manifest`,
      "--image-key", imageKeyPaths(state).publicKey, "--io-timeout", "30s", `${url.badApache}.sfs`, `${url.nginx}.sfs`, mnt]);
    mounts.push(mnt);
    expect(m.err + m.out).toContain("verified manifest");
    expect(m.code).toBe(0);
    const st0 = JSON.parse((await sh([...cli, "status", "--json", mnt])).out);
    pids.push(st0.pid);
    mounts.push(root);
    expect((await sh(["mount", "-t", "squashfs", "-o", "loop,ro", join(mnt, `${packed.digest}.sfs`), root])).code).toBe(0);
    const diff = await sh(["diff", "-r", "--no-dereference", tree, root], 120_000);
    expect(diff.out + diff.err).toBe("");
    expect(diff.code).toBe(0);
    const st = JSON.parse((await sh([...cli, "status", "--json", mnt])).out);
    expect(st.verified.badChunks).toBeGreaterThan(0);
    const badSource = st.image.sources.find((s: { url: string }) => s.url.includes("127.0.0.3"));
    expect(badSource.lastError).toContain(`chunk ${BAD_CHUNK} failed verification`);
    expect((await sh(["umount", root])).code).toBe(0);
    process.kill(st.pid, "SIGTERM");
    for (let i = 0; i < 100 && isMounted(mnt); i++) await Bun.sleep(100);
    expect(isMounted(mnt)).toBe(false);
  });

  test("a manifest altered after signing refuses the mount; nothing is mounted", async () => {
    const mnt = join(base, "m2");
    mkdirSync(mnt);
    mounts.push(mnt);
    const m = await sh([...cli, "mount", "--ca", pki.caCert, "--manifest", `${url.tampered}.manifest`,
      "--image-key", imageKeyPaths(state).publicKey, `${url.nginx}.sfs`, mnt]);
    expect(m.code).not.toBe(0);
    expect(m.err).toContain("refusing to mount");
    expect(m.err).toContain("bad signature");
    expect(isMounted(mnt)).toBe(false);
  });

  test("a manifest signed by another key refuses the mount", async () => {
    const mnt = join(base, "m3");
    mkdirSync(mnt);
    mounts.push(mnt);
    const other = join(base, "other.pub");
    writeFileSync(other, generateKeyPairSync("ed25519").publicKey.export({ type: "spki", format: "pem" }) as string);
    const m = await sh([...cli, "mount", "--ca", pki.caCert, "--manifest", `${url.nginx}.manifest`, "--image-key", other, `${url.nginx}.sfs`, mnt]);
    expect(m.code).not.toBe(0);
    expect(m.err).toMatch(/refusing to mount.*not by the trusted image key/);
    expect(isMounted(mnt)).toBe(false);
    expect(existsSync(join(mnt, `${packed.digest}.sfs`))).toBe(false);
  });

  test("a local manifest file with --expect-digest mounts; a digest of another image refuses", async () => {
    const local = join(base, "local.manifest");
    writeFileSync(local, readFileSync(join(state, "images", `${packed.digest}.manifest`)));
    const mnt = join(base, "m4"), bad = join(base, "m5");
    mkdirSync(mnt); mkdirSync(bad);
    mounts.push(mnt, bad);
    const refused = await sh([...cli, "mount", "--ca", pki.caCert, "--manifest", local, "--expect-digest", "0".repeat(64),
      "--image-key", imageKeyPaths(state).publicKey, `${url.nginx}.sfs`, bad]);
    expect(refused.code).not.toBe(0);
    expect(refused.err).toContain("refusing to mount");
    expect(isMounted(bad)).toBe(false);
    const m = await sh([...cli, "mount", "--ca", pki.caCert, "--manifest", local, "--expect-digest", packed.digest,
      "--image-key", imageKeyPaths(state).publicKey, `${url.nginx}.sfs`, mnt]);
    expect(m.err).toContain(`verified manifest ${local}`);
    expect(m.code).toBe(0);
    const st = JSON.parse((await sh([...cli, "status", "--json", mnt])).out);
    pids.push(st.pid);
    const sum = await sh(["sha256sum", join(mnt, `${packed.digest}.sfs`)], 120_000);
    expect(sum.out.split(" ")[0]).toBe(packed.digest);
    process.kill(st.pid, "SIGTERM");
    for (let i = 0; i < 100 && isMounted(mnt); i++) await Bun.sleep(100);
    expect(isMounted(mnt)).toBe(false);
  });
});
