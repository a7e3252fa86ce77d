// With a signed manifest the manifest is the image's validator: a mirror that sends neither ETag nor Last-Modified
// (stock lighttpd 1.4.69 with a minimal TLS config, and the config `serve mirror-config lighttpd` prints) is used, with
// every chunk verified and its size checked against the manifest, and compared with the other servers on size alone.
// Without a manifest such a mirror is refused with the reason (nothing proves it serves the same file), by the engine
// and by `airroot mount`; one that sends another size than the manifest's is excluded.
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { join } from "node:path";
import { appendFileSync, chmodSync, copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { removeScratchDirs } from "../helpers/tmp";
import { packedImage, runToFiles } from "../helpers/packed-image";
import type { TestPki } from "../helpers/pki";
import { freePort } from "../helpers/ports";
import { startLighttpd } from "../helpers/lighttpd";
import { startNginxSite } from "../helpers/nginx-site";
import type { PackResult } from "../../src/image/pack";
import { imageKeyPaths } from "../../src/image/keys";
import { imageFile, manifestFile } from "../../src/image/paths";
import { manifestVerifier } from "../../src/image/verify";
import { mirrorConfig } from "../../src/server/mirror";
import { RemoteImage, type RemoteImageOptions } from "../../src/source/image";
import { memoryLogger } from "../../src/util/log";

setDefaultTimeout(120_000);

const cli = [process.execPath, join(import.meta.dir, "..", "..", "src", "cli", "main.ts")];
let base = "", pki: TestPki, packed: PackResult, state = "";
const url = { stock: "", generated: "", nginx: "", longer: "" };
const stops: (() => Promise<void>)[] = [];
const mounts: string[] = [];

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const isMounted = (mp: string) => readFileSync("/proc/self/mounts", "utf8").split("\n").some((l) => l.split(" ")[1] === mp);

const sh = (cmd: string[], timeoutMs?: number) => runToFiles(base, cmd, timeoutMs);

/** A directory DIR/images/ holding a copy of the packed image and its manifest (world-readable: lighttpd, nginx). */
function mirrorCopy(name: string, extra = ""): string {
  const dir = join(base, name);
  mkdirSync(join(dir, "images"), { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  for (const f of [imageFile(state, packed.digest), manifestFile(state, packed.digest)]) {
    const to = join(dir, "images", f.slice(f.lastIndexOf("/") + 1));
    copyFileSync(f, to);
    chmodSync(to, 0o644);
  }
  if (extra) appendFileSync(join(dir, "images", `${packed.digest}.sfs`), extra);
  return dir;
}

/** lighttpd as a stock install serves files: a document root and TLS on one socket, nothing else configured. */
const stockLighttpd = (socket: string, docroot: string) => `server.modules += ("mod_openssl")
$SERVER["socket"] == "${socket}" {
  ssl.engine = "enable"
  ssl.pemfile = "${pki.serverCert}"
  ssl.privkey = "${pki.serverKey}"
  server.document-root = "${docroot}"
}
`;

beforeAll(async () => {
  ({ base, pki, state, packed } = await packedImage(3 * 1024 * 1024 + 4321));

  const [ps, pg, pn, pl] = [await freePort("127.0.0.6"), await freePort("127.0.0.7"), await freePort("127.0.0.2"), await freePort("127.0.0.8")];
  const stock = await startLighttpd({ workDir: join(base, "lt-stock"), listen: { host: "127.0.0.6", port: ps },
    siteConfig: stockLighttpd(`127.0.0.6:${ps}`, mirrorCopy("stock")) });
  stops.push(() => stock.stop());
  const generated = await startLighttpd({ workDir: join(base, "lt-gen"), listen: { host: "127.0.0.7", port: pg },
    siteConfig: mirrorConfig("lighttpd", { imagesDir: join(mirrorCopy("gen"), "images"), listen: [`127.0.0.7:${pg}`], cert: pki.serverCert, key: pki.serverKey }) });
  stops.push(() => generated.stop());
  const nginx = await startNginxSite({ workDir: join(base, "ng"), waitFor: [{ host: "127.0.0.2", port: pn }],
    siteConfig: mirrorConfig("nginx", { imagesDir: join(mirrorCopy("ng"), "images"), listen: [`127.0.0.2:${pn}`], cert: pki.serverCert, key: pki.serverKey }) });
  stops.push(() => nginx.stop());
  // Same name, 7 bytes longer: another file than the manifest describes.
  const longer = await startLighttpd({ workDir: join(base, "lt-longer"), listen: { host: "127.0.0.8", port: pl },
    siteConfig: stockLighttpd(`127.0.0.8:${pl}`, mirrorCopy("longer", "trailer")) });
  stops.push(() => longer.stop());
  const img = `images/${packed.digest}`;
  url.stock = `https://127.0.0.6:${ps}/${img}`;
  url.generated = `https://127.0.0.7:${pg}/${img}`;
  url.nginx = `https://127.0.0.2:${pn}/${img}`;
  url.longer = `https://127.0.0.8:${pl}/${img}`;
});

afterAll(async () => {
  for (const mp of mounts.reverse()) {
    if (isMounted(mp) && Bun.spawnSync(["umount", mp]).exitCode !== 0) Bun.spawnSync(["umount", "-l", mp]);
  }
  for (const s of stops.reverse()) { try { await s(); } catch { /* keep going */ } }
  removeScratchDirs();
});

const opts = (withManifest: boolean): RemoteImageOptions => ({
  ca: readFileSync(pki.caCert), log: memoryLogger(), probeIntervalMs: 60_000, ioTimeoutMs: 20_000,
  verifier: withManifest ? manifestVerifier(packed.manifest) : undefined,
});

async function readAll(img: RemoteImage): Promise<Uint8Array> {
  const out = new Uint8Array(img.size);
  for (let off = 0; off < img.size; off += 256 * 1024) out.set(await img.read(off, 256 * 1024), off);
  return out;
}

async function curlHeaders(u: string, extra: string[] = []): Promise<string> {
  const p = Bun.spawn(["curl", "-sS", "--http1.1", "--max-time", "20", "--cacert", pki.caCert, "-o", "/dev/null", "-D", "-", ...extra, u], { stdout: "pipe", stderr: "pipe" });
  const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  return out.toLowerCase();
}

describe("a mirror without ETag or Last-Modified", () => {
  test("stock lighttpd, and the mirror-config lighttpd config, send neither", async () => {
    for (const u of [url.stock, url.generated]) {
      const h = await curlHeaders(`${u}.sfs`, ["-r", "0-9"]);
      expect(h).toStartWith("http/1.1 206");
      expect(h).toContain(`content-range: bytes 0-9/${packed.size}`);
      expect(h).not.toContain("etag:");
      expect(h).not.toContain("last-modified:");
    }
  });

  test("with the signed manifest: used, every chunk verified, the right bytes read back", async () => {
    for (const u of [url.stock, url.generated]) {
      const img = await RemoteImage.open([`${u}.sfs`], opts(true));
      try {
        expect(img.size).toBe(packed.size);
        expect(img.validator).toBe("none");
        expect(sha(await readAll(img))).toBe(packed.digest);
        expect(img.status().sources.map((s) => [s.state, s.errors])).toEqual([["healthy", 0]]);
      } finally { await img.close(); }
    }
  });

  test("without a manifest: refused, and the error says why", async () => {
    const e = await RemoteImage.open([`${url.stock}.sfs`, `${url.generated}.sfs`], opts(false)).then(() => null, (x) => x as Error);
    expect(e?.message).toStartWith(`no usable image server for ${packed.digest}.sfs: ${url.stock}.sfs: sends neither an ETag nor a ` +
      "Last-Modified header, so nothing proves it serves the same file as the other servers, or that the file stays the same " +
      "while it is read; refused without a signed manifest (--manifest URL --image-key PEM");
    expect(e?.message).toContain(`; ${url.generated}.sfs: sends neither`);
  });

  test("mixed with a mirror that sends the digest ETag: with a manifest both are used (compared on size), without it only the ETag one", async () => {
    const log = memoryLogger();
    const both = await RemoteImage.open([`${url.generated}.sfs`, `${url.nginx}.sfs`], { ...opts(true), log });
    try {
      expect(both.validator).toBe(`"${packed.digest}"`); // the one validator there is
      expect(sha(await readAll(both))).toBe(packed.digest);
      const st = both.status().sources;
      expect(st.map((s) => s.state)).toEqual(["healthy", "healthy"]);
      expect(st[0].bytes).toBe(packed.size); // listed first: every byte came from lighttpd, verified
      expect(log.lines.filter((l) => /excluding|disagree/.test(l))).toEqual([]);
    } finally { await both.close(); }

    const log2 = memoryLogger();
    const one = await RemoteImage.open([`${url.generated}.sfs`, `${url.nginx}.sfs`], { ...opts(false), log: log2 });
    try {
      expect(sha(await readAll(one))).toBe(packed.digest);
      const st = one.status().sources;
      expect(st.map((s) => s.state)).toEqual(["excluded", "healthy"]);
      expect(st[0].reason).toMatch(/^sends neither an ETag nor a Last-Modified header/);
      expect(st[0].bytes).toBe(0);
      expect(log2.lines.some((l) => l.includes(`excluding ${url.generated}.sfs: sends neither`))).toBe(true);
    } finally { await one.close(); }
  });

  test("with a manifest the size must still match it: a longer file is excluded, alone it is refused", async () => {
    const img = await RemoteImage.open([`${url.longer}.sfs`, `${url.stock}.sfs`], opts(true));
    try {
      expect(img.size).toBe(packed.size);
      const st = img.status().sources;
      expect(st.map((s) => s.state)).toEqual(["excluded", "healthy"]);
      expect(st[0].reason).toBe(`serves ${packed.size + 7} bytes, but the signed manifest describes ${packed.size}`);
      expect(sha(await readAll(img))).toBe(packed.digest);
    } finally { await img.close(); }
    const e = await RemoteImage.open([`${url.longer}.sfs`], opts(true)).then(() => null, (x) => x as Error);
    expect(e?.message).toBe(`no usable image server for ${packed.digest}.sfs: ${url.longer}.sfs: serves ${packed.size + 7} bytes, but the signed manifest describes ${packed.size}`);
  });

  test("a mirror without validator that was down at open joins later only with a manifest", async () => {
    const port = await freePort("127.0.0.9");
    const late = `https://127.0.0.9:${port}/images/${packed.digest}.sfs`;
    for (const withManifest of [true, false]) {
      const log = memoryLogger();
      const img = await RemoteImage.open([late, `${url.nginx}.sfs`], { ...opts(withManifest), log, probeIntervalMs: 100, holdDownMs: 0 });
      // Checked before lighttpd starts: once it listens, the 100 ms prober may find it at any moment.
      const downAtOpen = img.status().sources[0].state;
      const lt = await startLighttpd({ workDir: join(base, `lt-late-${withManifest}`), listen: { host: "127.0.0.9", port },
        siteConfig: stockLighttpd(`127.0.0.9:${port}`, join(base, "stock")) });
      try {
        expect(downAtOpen).toBe("down");
        let st = img.status().sources[0];
        for (let i = 0; i < 100 && (st.state === "down" || st.state === "probing"); i++) { await Bun.sleep(50); st = img.status().sources[0]; }
        if (withManifest) {
          expect(st.state).toBe("healthy");
          expect(sha(await readAll(img))).toBe(packed.digest);
        } else {
          expect(st.state).toBe("excluded");
          expect(st.reason).toBe(`sends neither an ETag nor a Last-Modified header (expected validator "${packed.digest}"), so nothing proves it serves the same file`);
        }
      } finally {
        await img.close();
        await lt.stop();
      }
    }
  });

  test("airroot mount --manifest through lighttpd mounts and reads back the image; without --manifest it refuses", async () => {
    const mnt = join(base, "m1"), refused = join(base, "m2");
    mkdirSync(mnt); mkdirSync(refused);
    mounts.push(mnt, refused);
    const no = await sh([...cli, "mount", "--ca", pki.caCert, `${url.generated}.sfs`, refused]);
    expect(no.code).not.toBe(0);
    expect(no.err).toContain(`no usable image server for ${packed.digest}.sfs: ${url.generated}.sfs: sends neither an ETag nor a Last-Modified header`);
    expect(no.err).toContain("refused without a signed manifest (--manifest URL --image-key PEM");
    expect(isMounted(refused)).toBe(false);

    const m = await sh([...cli, "mount", "--ca", pki.caCert, "--manifest", `${url.generated}.manifest`,
      "--image-key", imageKeyPaths(state).publicKey, "--io-timeout", "30s", `${url.generated}.sfs`, mnt]);
    expect(m.err + m.out).toContain("verified manifest");
    expect(m.code).toBe(0);
    const st = JSON.parse((await sh([...cli, "status", "--json", mnt])).out);
    try {
      expect(st.image.validator).toBe("none");
      const sum = await sh(["sha256sum", join(mnt, `${packed.digest}.sfs`)], 120_000);
      expect(sum.out.split(" ")[0]).toBe(packed.digest);
      const after = JSON.parse((await sh([...cli, "status", "--json", mnt])).out);
      expect(after.verified.badChunks).toBe(0);
      expect(after.image.sources[0].state).toBe("healthy");
    } finally {
      process.kill(st.pid, "SIGTERM");
      for (let i = 0; i < 100 && isMounted(mnt); i++) await Bun.sleep(100);
    }
    expect(isMounted(mnt)).toBe(false);
  });
});
