// Everything the selftest serves and trusts, made fresh in its temp dir: a site CA with a server certificate for
// 127.0.0.1 and ::1, an unrelated second CA, an image-signing key, a test image (a real squashfs of a generated tree
// when mksquashfs exists, else random bytes), its signed manifest, and a tampered copy of the image.
import { copyFileSync, mkdirSync, openSync, closeSync, readSync, writeSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { createCa, issueServerCert, loadCa } from "../pki/x509ca";
import { ensureImageKey, readImagePrivateKey, readImagePublicKey } from "../image/keys";
import { MANIFEST_FORMAT, signManifest, type Manifest } from "../image/manifest";
import { hashFile, mksquashfsArgs } from "../image/pack";
import { runAsync, which } from "./proc";

export interface Fixtures {
  /** PEM of the site CA (what `airroot mount --ca` gets) and its path. */
  caPem: string; caFile: string;
  /** PEM of an unrelated CA that signed nothing the servers use. */
  otherCaPem: string; otherCaFile: string;
  serverCertPem: string; serverKeyPem: string;
  imagePubPem: string; imagePubFile: string;
  /** Good images: <digest>.sfs and <digest>.manifest, as `airroot serve` stores them. */
  imagesDir: string;
  /** Same names, but the .sfs has altered bytes in a few chunks (same size, so servers still "agree"). */
  tamperedDir: string;
  imageName: string;      // <digest>.sfs
  manifestName: string;   // <digest>.manifest
  imageFile: string;      // the good .sfs
  digest: string;
  size: number;
  chunkSize: number;
  tamperedChunks: number[];
  /** Set when the image is a real squashfs: the tree it was made from and a few of its files to compare. */
  squashfs?: { tree: string; files: { path: string; sha256: string }[] };
}

export interface FixtureOptions {
  /** Approximate image size (default 24 MiB: big enough for many range requests, quick to make and hash). */
  imageBytes?: number;
  /** Manifest chunk size (default 256 KiB, as `airroot image pack`). */
  chunkSize?: number;
  /** Build a squashfs when mksquashfs is on PATH (default true). */
  squashfs?: boolean;
}

const MiB = 1048576;

export async function makeFixtures(dir: string, opts: FixtureOptions = {}): Promise<Fixtures> {
  const imageBytes = opts.imageBytes ?? 24 * MiB;
  const chunkSize = opts.chunkSize ?? 256 * 1024;
  mkdirSync(dir, { recursive: true, mode: 0o700 });

  const site = await createCa("airroot selftest site CA", 1);
  const other = await createCa("airroot selftest unrelated CA", 1);
  const server = await issueServerCert(await loadCa(site.certPem, site.keyPem), ["127.0.0.1", "::1"], "airroot selftest server", 1);
  const caFile = join(dir, "site-ca.pem"), otherCaFile = join(dir, "other-ca.pem");
  writeFileSync(caFile, site.certPem, { mode: 0o644 });
  writeFileSync(otherCaFile, other.certPem, { mode: 0o644 });

  const stateDir = join(dir, "state");
  const keyPaths = ensureImageKey(stateDir);
  const privateKey = readImagePrivateKey(stateDir);

  const work = join(dir, "build");
  mkdirSync(work, { recursive: true });
  const raw = join(work, "image.sfs");
  let squashfs: Fixtures["squashfs"];
  if ((opts.squashfs ?? true) && which("mksquashfs")) {
    const tree = join(dir, "tree");
    const files = makeTree(tree, imageBytes);
    const r = await runAsync(mksquashfsArgs(tree, raw, 0, false), { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`mksquashfs ${tree} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-500)}`);
    squashfs = { tree, files };
  } else {
    writeRandomFile(raw, imageBytes);
  }

  const { digest, chunks } = hashFile(raw, chunkSize);
  const size = Bun.file(raw).size;
  const manifest: Manifest = {
    format: MANIFEST_FORMAT, digest, size, chunkSize, chunks, created: new Date().toISOString(), profile: "selftest",
  };
  const imageName = `${digest}.sfs`, manifestName = `${digest}.manifest`;
  const imagesDir = join(dir, "images"), tamperedDir = join(dir, "tampered");
  mkdirSync(imagesDir); mkdirSync(tamperedDir);
  copyFileSync(raw, join(imagesDir, imageName));
  const signed = signManifest(manifest, privateKey);
  writeFileSync(join(imagesDir, manifestName), signed);
  writeFileSync(join(tamperedDir, manifestName), signed); // the manifest is genuine; only the image bytes lie

  // First, middle and last chunk: the first one is what any reader (squashfs superblock, sha256sum) asks for first.
  const tamperedChunks = [...new Set([0, Math.floor(chunks.length / 2), chunks.length - 1])];
  copyFileSync(raw, join(tamperedDir, imageName));
  flipBytes(join(tamperedDir, imageName), tamperedChunks.map((c) => Math.min(size - 1, c * chunkSize + 4093)));

  return {
    caPem: site.certPem, caFile, otherCaPem: other.certPem, otherCaFile,
    serverCertPem: server.certPem, serverKeyPem: server.keyPem,
    imagePubPem: readImagePublicKey(stateDir), imagePubFile: keyPaths.publicKey,
    imagesDir, tamperedDir, imageName, manifestName, imageFile: join(imagesDir, imageName),
    digest, size, chunkSize, tamperedChunks, squashfs,
  };
}

/** A small tree: a few text files plus random (incompressible) files adding up to about `bytes`. */
function makeTree(tree: string, bytes: number): { path: string; sha256: string }[] {
  mkdirSync(join(tree, "etc"), { recursive: true });
  mkdirSync(join(tree, "data", "deep", "er"), { recursive: true });
  const files: { path: string; data: Uint8Array }[] = [
    { path: "etc/hostname", data: new TextEncoder().encode("selftest\n") },
    { path: "etc/motd", data: new TextEncoder().encode("airroot selftest image\n".repeat(500)) },
  ];
  let left = bytes, i = 0;
  while (left > 0) {
    const n = Math.min(left, Math.max(4096, (1 + (i % 5)) * MiB - 1000 * i)); // assorted sizes, most not block-aligned
    files.push({ path: `data/${i % 3 === 2 ? "deep/er/" : ""}blob-${i}.bin`, data: randomBytes(n) });
    left -= n; i++;
  }
  for (const f of files) writeFileSync(join(tree, f.path), f.data);
  return files.map((f) => ({ path: f.path, sha256: new Bun.CryptoHasher("sha256").update(f.data).digest("hex") }));
}

function writeRandomFile(path: string, bytes: number): void {
  const fd = openSync(path, "w", 0o644);
  try {
    for (let done = 0; done < bytes;) {
      const piece = randomBytes(Math.min(MiB, bytes - done));
      writeSync(fd, piece);
      done += piece.length;
    }
  } finally { closeSync(fd); }
}

/** Inverts one byte at each offset (a tampered copy of exactly the same size). */
function flipBytes(path: string, offsets: number[]): void {
  const fd = openSync(path, "r+");
  try {
    const b = Buffer.alloc(1);
    for (const off of offsets) {
      readSync(fd, b, 0, 1, off);
      b[0] ^= 0xff;
      writeSync(fd, b, 0, 1, off);
    }
  } finally { closeSync(fd); }
}
