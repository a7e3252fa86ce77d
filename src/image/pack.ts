// `image pack`: builds a reproducible squashfs of a root tree, stores it content-addressed, signs its manifest and
// points a profile at it.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeSync, chmodSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { Db } from "../server/store/sql.ts";
import { ensureImageKey, readImagePrivateKey, readImagePublicKey } from "./keys";
import { imageFile, imagesDir, manifestFile, PACK_TMP_PREFIX } from "./paths";
import { MANIFEST_FORMAT, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, isValidProfileName, loadManifest, signManifest, type Manifest } from "./manifest";
import { addImage, setProfile } from "../server/store/images";
import { encryptImageFile, newImageKey, type ImageEncryption } from "./encrypt";
import { writeImageKey } from "./imagekeys";

/**
 * 256 KiB chunks. The chunk is the unit the range engine fetches, caches and verifies, so it trades random-read
 * amplification against per-request overhead: squashfs reads 128 KiB blocks, so a random miss fetches at most 2x what
 * it needs (1 MiB would be 8x, and at boot most reads are small and scattered); the engine coalesces adjacent chunks
 * into 512 KiB range requests, and a 1 MiB FUSE read becomes two of them in flight, so sequential reads stay fast
 * (lab: large ranges with several in flight). A bad chunk refetched elsewhere costs little. Hashing cost per byte does
 * not depend on the size; the manifest costs ~67 bytes (hex SHA-256) per chunk: ~270 KB per GiB of image.
 */
export const DEFAULT_CHUNK_SIZE = 256 * 1024;

export interface PackOptions {
  rootDir: string;
  profile: string;
  stateDir: string;
  db: Db;
  chunkSize?: number;              // default DEFAULT_CHUNK_SIZE
  /** Filesystem creation time written into the squashfs superblock (seconds). Fixed so that packs are reproducible. */
  mkfsTime?: number;               // default 0
  /** Progress lines ("packing ...", "hashing ...") go here; mksquashfs's own bar goes to the terminal if interactive. */
  log?: (line: string) => void;    // default: nothing
  interactive?: boolean;           // show mksquashfs's progress bar (default false)
  /** Encrypt the squashfs with a new random key (AES-256-XTS as dm-crypt reads it), kept in STATE/image-keys. */
  encrypt?: boolean;
  now?: () => Date;
}

export interface PackResult { digest: string; size: number; manifest: Manifest; reused: boolean; seconds: number }

/**
 * mksquashfs options, chosen for reproducible root images:
 * - zstd: squashfs zstd is built into the Debian kernel; much faster to build than xz for ~10% more bytes (lab).
 * - -reproducible, fixed -mkfs-time, SOURCE_DATE_EPOCH removed from the environment: the same tree gives the same
 *   bytes, hence the same digest (re-packing an unchanged tree reuses the image).
 * - no -all-root: a root OS has files owned by service users; no -all-time: file mtimes are part of the OS (systemd's
 *   ConditionNeedsUpdate, caches) and come from the tree, which a reproducible bootstrap already fixes.
 * - xattrs kept (-xattrs): file capabilities (e.g. ping's cap_net_raw) live there.
 * - -one-file-system: a chroot with /proc or /dev mounted must not pull those in.
 * - -noappend: never extend an existing file.
 */
export function mksquashfsArgs(rootDir: string, out: string, mkfsTime: number, interactive: boolean): string[] {
  return ["mksquashfs", rootDir, out, "-noappend", "-comp", "zstd", "-reproducible", "-mkfs-time", String(mkfsTime),
    "-xattrs", "-one-file-system", ...(interactive ? [] : ["-no-progress", "-quiet"])];
}

export async function packImage(opts: PackOptions): Promise<PackResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => {});
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!isValidProfileName(opts.profile)) {
    throw new Error(`image pack: invalid profile name "${opts.profile}": use letters, digits, '.', '_' or '-' (max 64)`);
  }
  if (!Number.isSafeInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE || (chunkSize & (chunkSize - 1)) !== 0) {
    throw new Error(`image pack: chunk size ${chunkSize} must be a power of two between ${MIN_CHUNK_SIZE} and ${MAX_CHUNK_SIZE} bytes`);
  }
  const mkfsTime = opts.mkfsTime ?? 0;
  if (!Number.isInteger(mkfsTime) || mkfsTime < 0 || mkfsTime >= 2 ** 32) throw new Error(`image pack: mkfs time ${mkfsTime} is not seconds since epoch`);
  let st;
  try { st = statSync(opts.rootDir); } catch { st = null; }
  if (!st?.isDirectory()) throw new Error(`image pack: ${opts.rootDir} is not a directory: pass the root tree to pack`);
  ensureImageKey(opts.stateDir);
  const privateKey = readImagePrivateKey(opts.stateDir);
  const dir = imagesDir(opts.stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o755 });

  const tmp = join(dir, `${PACK_TMP_PREFIX}${randomBytes(8).toString("hex")}.sfs`);
  const tmpPlain = `${tmp}.plain`; // with --encrypt mksquashfs writes here and tmp gets the ciphertext
  let interrupted: ((sig: NodeJS.Signals) => void) | undefined;
  try {
    log(`packing ${opts.rootDir} with mksquashfs (zstd, reproducible)...`);
    const env = { ...process.env };
    delete env.SOURCE_DATE_EPOCH; // it would clamp file times and conflicts with -mkfs-time
    const proc = Bun.spawn(mksquashfsArgs(opts.rootDir, opts.encrypt ? tmpPlain : tmp, mkfsTime, opts.interactive ?? false), {
      env, stdin: "ignore", stdout: opts.interactive ? "inherit" : "pipe", stderr: "pipe",
    });
    // Interrupted (Ctrl-C, SIGTERM): stop mksquashfs and leave no partial image behind; `finally` never runs then.
    interrupted = (sig) => {
      proc.kill("SIGKILL");
      for (const f of [tmp, tmpPlain]) try { unlinkSync(f); } catch { /* not written yet */ }
      log(`image pack: ${sig}: stopped mksquashfs, removed the partial image; nothing was stored`);
      process.exit(sig === "SIGINT" ? 130 : 143);
    };
    process.once("SIGINT", interrupted);
    process.once("SIGTERM", interrupted);
    const [stderr, stdout] = await Promise.all([
      new Response(proc.stderr).text(),
      proc.stdout && typeof proc.stdout !== "number" ? new Response(proc.stdout).text() : Promise.resolve(""),
      proc.exited,
    ]);
    if (proc.exitCode !== 0) {
      throw new Error(`image pack: mksquashfs failed (exit ${proc.exitCode}): ${(stderr || stdout).trim().slice(-2000)}`);
    }

    let encryption: ImageEncryption | undefined;
    let imageKey: Buffer | undefined;
    if (opts.encrypt) {
      imageKey = newImageKey();
      log(`encrypting ${(statSync(tmpPlain).size / 1048576).toFixed(1)} MiB (aes-xts-plain64, 512-bit key, 4096-byte sectors)...`);
      encryption = encryptImageFile(tmpPlain, tmp, imageKey);
      unlinkSync(tmpPlain);
    }
    const size = statSync(tmp).size;
    log(`hashing ${(size / 1048576).toFixed(1)} MiB in ${chunkSize / 1024} KiB chunks...`);
    let nextReport = 0.25;
    const { digest, chunks } = hashFile(tmp, chunkSize, (done) => {
      if (size < 512 * 1048576 || done / size < nextReport) return; // only big images need a progress line
      log(`  hashed ${Math.round((done / size) * 100)}%`);
      nextReport += 0.25;
    });
    const dest = imageFile(opts.stateDir, digest);
    let reused = false;
    // The key goes into place before the image does: a stored encrypted image always has its key.
    if (imageKey) writeImageKey(opts.stateDir, digest, imageKey);
    if (existsSync(dest) && statSync(dest).size === size && hashFile(dest, chunkSize).digest === digest) {
      reused = true; // same content, same name: the stored file is this image (content-addressed)
      unlinkSync(tmp);
    } else {
      if (existsSync(dest)) log(`stored ${digest}.sfs does not match its name (damaged on disk): replacing it`);
      chmodSync(tmp, 0o644);
      fsyncFile(tmp); // mksquashfs does not: the data must be on disk before the name is
      renameSync(tmp, dest); // atomic: readers see no file or the whole file, never a prefix
    }

    const mPath = manifestFile(opts.stateDir, digest);
    const created = (opts.now ?? (() => new Date()))();
    let manifest: Manifest = {
      format: MANIFEST_FORMAT, digest, size, chunkSize, chunks, created: created.toISOString(), profile: opts.profile,
      ...(encryption ? { encryption } : {}),
    };
    const stored = existsSync(mPath) ? storedManifest(mPath, readImagePublicKey(opts.stateDir), digest, size) : null;
    if (stored && !(stored instanceof Error)) {
      manifest = stored; // nodes may already hold this one: keep it (same image, same bytes)
      log(`image ${digest} already stored; keeping its manifest`);
    } else {
      if (stored) log(`replacing the stored manifest of ${digest}: ${stored.message}`);
      writeFileAtomic(mPath, signManifest(manifest, privateKey));
    }
    fsyncDir(dir);

    await addImage(opts.db, { digest, size, created: created.getTime(), profile: opts.profile });
    await setProfile(opts.db, opts.profile, digest, created.getTime());
    log(`profile ${opts.profile} -> ${digest} (${(size / 1048576).toFixed(1)} MiB, ${chunks.length} chunks${encryption ? ", encrypted" : ""})`);
    return { digest, size, manifest, reused, seconds: (performance.now() - t0) / 1000 };
  } finally {
    if (interrupted) { process.off("SIGINT", interrupted); process.off("SIGTERM", interrupted); }
    for (const f of [tmp, tmpPlain]) if (existsSync(f)) unlinkSync(f);
  }
}

/** The manifest already stored for an image, or the reason it cannot be used (damaged, other key, other file). */
function storedManifest(path: string, publicKeyPem: string, digest: string, size: number): Manifest | Error {
  try { return loadManifest(readFileSync(path), publicKeyPem, { expectDigest: digest, expectSize: size }); }
  catch (e) { return e as Error; }
}

/** Whole-file SHA-256 and per-chunk SHA-256s in one streaming pass (memory: one chunk). */
export function hashFile(path: string, chunkSize: number, onProgress?: (bytesDone: number) => void): { digest: string; chunks: string[] } {
  const whole = new Bun.CryptoHasher("sha256");
  const chunks: string[] = [];
  const buf = new Uint8Array(chunkSize);
  const fd = openSync(path, "r");
  try {
    for (;;) {
      let n = 0;
      while (n < chunkSize) { // fill the chunk fully: readSync may return short counts
        const r = readSync(fd, buf, n, chunkSize - n, null);
        if (r === 0) break;
        n += r;
      }
      if (n === 0) break;
      const piece = buf.subarray(0, n);
      whole.update(piece);
      chunks.push(new Bun.CryptoHasher("sha256").update(piece).digest("hex"));
      onProgress?.(chunks.length * chunkSize - (chunkSize - n));
      if (n < chunkSize) break;
    }
  } finally { closeSync(fd); }
  if (chunks.length === 0) throw new Error(`image pack: ${path} is empty; mksquashfs produced nothing`);
  return { digest: whole.digest("hex"), chunks };
}

function writeFileAtomic(path: string, data: Uint8Array): void {
  const tmp = `${path.replace(/[^/]+$/, "")}${PACK_TMP_PREFIX}${randomBytes(8).toString("hex")}.manifest`;
  const fd = openSync(tmp, "wx", 0o644);
  try { writeSync(fd, data); fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
}

function fsyncFile(path: string): void {
  const fd = openSync(path, "r");
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try { fsyncSync(fd); } finally { closeSync(fd); }
}
