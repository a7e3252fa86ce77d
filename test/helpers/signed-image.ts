// A small squashfs root for failover boots: busybox, incompressible data files whose sha256 the image's own init checks
// after switch_root (so reads during and after a failover are proven correct), a signed manifest, and tampered copies.
import { chmodSync, closeSync, mkdirSync, openSync, readSync, statSync, symlinkSync, utimesSync, writeFileSync, writeSync, copyFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { ensureImageKey, readImagePrivateKey, readImagePublicKey } from "../../src/image/keys";
import { MANIFEST_FORMAT, signManifest, type Manifest } from "../../src/image/manifest";
import { hashFile } from "../../src/image/pack";

/**
 * /sbin/init of the image: checks every data file against the digests baked into the image, prints the mount daemon's
 * log (it lives in the moved /run), then powers off, or with `fotest=wait` on the kernel command line stays up 120 s
 * so the test can look at the node over ssh first.
 */
export const DATA_CHECK_INIT = `#!/bin/sh
export PATH=/bin:/sbin
echo "AIRROOT-FO-INIT: pid $$"
grep ' / ' /proc/mounts | sed 's/^/AIRROOT-FO-ROOT: /'
echo "AIRROOT-FO-READING"
if sha256sum -c /etc/airroot-data.sha256 > /tmp/check 2>&1; then
  echo "AIRROOT-FO-DATA: OK $(grep -c ': OK$' /tmp/check) files"
else
  echo "AIRROOT-FO-DATA: FAILED"
fi
sed 's/^/AIRROOT-FO-CHECK: /' /tmp/check
for f in /run/airroot/mounts/*.log; do [ -f "$f" ] && sed 's/^/AIRROOT-FO-DAEMON: /' "$f"; done
echo "AIRROOT-FO-DONE"
grep -q 'fotest=wait' /proc/cmdline && sleep 120
poweroff -f
sleep 30
`;

export interface DataImage {
  /** The squashfs file. */
  image: string;
  size: number;
  /** Data files (path inside the image) and their sha256. */
  files: { path: string; sha256: string }[];
}

const MiB = 1048576;

/** Builds the image under `dir`: `dataMiB` of random data split into files of at most 3 MiB (default 12 MiB). */
export function makeDataRootImage(dir: string, dataMiB = 12): DataImage {
  const tree = join(dir, "tree");
  for (const d of ["bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "mnt", "data"]) mkdirSync(join(tree, d), { recursive: true });
  copyFileSync("/bin/busybox", join(tree, "bin/busybox"));
  chmodSync(join(tree, "bin/busybox"), 0o755);
  for (const applet of ["sh", "grep", "sed", "cat", "echo", "poweroff", "sha256sum", "sleep", "ls", "head", "tr", "wc", "mount"])
    symlinkSync("busybox", join(tree, "bin", applet));
  writeFileSync(join(tree, "sbin/init"), DATA_CHECK_INIT, { mode: 0o755 });
  const files: DataImage["files"] = [];
  for (let left = dataMiB * MiB, i = 0; left > 0; i++) {
    const n = Math.min(left, 3 * MiB - 777 * i); // not block-aligned, so file tails share squashfs fragments
    const data = randomBytes(n);
    const path = `/data/blob-${i}.bin`;
    writeFileSync(join(tree, path), data);
    files.push({ path, sha256: new Bun.CryptoHasher("sha256").update(data).digest("hex") });
    left -= n;
  }
  writeFileSync(join(tree, "etc/airroot-data.sha256"), files.map((f) => `${f.sha256}  ${f.path}\n`).join(""));
  const image = join(dir, "root.sfs");
  const r = Bun.spawnSync(["mksquashfs", tree, image, "-comp", "zstd", "-noappend", "-quiet", "-all-root"], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`mksquashfs ${tree} failed: ${r.stderr.toString()}`);
  return { image, size: statSync(image).size, files };
}

export interface SignedManifest {
  /** The signed manifest file (serve it beside the image). */
  manifest: string;
  /** The image-signing public key (PEM): the site's image-key.pem. */
  publicKeyPem: string;
  chunkSize: number;
  chunks: number;
}

/** Signs a manifest for `image` with a fresh image key kept in `stateDir`, as `airroot image pack` would. */
export function signImage(image: string, stateDir: string, manifestOut: string, chunkSize = 256 * 1024): SignedManifest {
  ensureImageKey(stateDir);
  const { digest, chunks } = hashFile(image, chunkSize);
  const m: Manifest = { format: MANIFEST_FORMAT, digest, size: statSync(image).size, chunkSize, chunks,
    created: new Date().toISOString(), profile: "failover-test" };
  writeFileSync(manifestOut, signManifest(m, readImagePrivateKey(stateDir)));
  return { manifest: manifestOut, publicKeyPem: readImagePublicKey(stateDir), chunkSize, chunks: chunks.length };
}

/**
 * Copies `src` to `dst` with one byte inverted in each listed chunk, and gives it the same mtime as `src`: same size and
 * mtime means nginx sends the same ETag, so the servers "agree" and only the manifest's hashes can tell.
 */
export function tamperedCopy(src: string, dst: string, chunkIndexes: number[], chunkSize: number): void {
  copyFileSync(src, dst);
  const size = statSync(src).size;
  const fd = openSync(dst, "r+");
  try {
    const b = Buffer.alloc(1);
    for (const c of chunkIndexes) {
      const off = Math.min(size - 1, c * chunkSize + 1021);
      readSync(fd, b, 0, 1, off);
      b[0] ^= 0xff;
      writeSync(fd, b, 0, 1, off);
    }
  } finally { closeSync(fd); }
  const st = statSync(src);
  utimesSync(dst, st.atime, st.mtime);
}
