// Checks stored images against their signed manifests (on the server or on a mirror's copy): signature, size, whole
// digest and every chunk, so bit rot or a bad sync is found before a node hits it.
import { lstatSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { loadManifest } from "./manifest";
import { hashFile } from "./pack";
import { IMAGE_NAME_RE } from "./paths";

export interface ImageCheck {
  digest: string;
  ok: boolean;
  problem?: string;      // what is wrong and what to do, when !ok
  badChunks?: number[];  // indexes of chunks whose SHA-256 differs from the manifest
}

/** Checks every <digest>.sfs / <digest>.manifest pair in `dir`; a file without its partner is a problem too. */
export function checkStoredImages(dir: string, publicKeyPem: string): ImageCheck[] {
  const digests = new Set<string>();
  for (const name of readdirSync(dir)) {
    const m = IMAGE_NAME_RE.exec(name);
    if (m && !unsafeEntry(dir, name)) digests.add(m[1]);
  }
  return [...digests].sort().map((d) => checkStoredImage(dir, d, publicKeyPem));
}

export interface StrayEntry { name: string; problem: string; unsafe: boolean }

/**
 * Entries of an images directory that are not what `image pack` writes. Unsafe: anything but a regular file (a
 * symlink could expose any file of the server; airroot serve refuses to serve them). Else: a regular file that is
 * not an image or manifest (a pack in progress leaves a temporary file for a moment).
 */
export function strayEntries(dir: string): StrayEntry[] {
  const out: StrayEntry[] = [];
  for (const name of readdirSync(dir).sort()) {
    const unsafe = unsafeEntry(dir, name);
    if (unsafe) out.push({ name, problem: `${unsafe}: remove it (images are regular files written by image pack)`, unsafe: true });
    else if (!IMAGE_NAME_RE.test(name)) out.push({ name, problem: "not an image or manifest", unsafe: false });
  }
  return out;
}

function unsafeEntry(dir: string, name: string): string | undefined {
  const st = lstatSync(join(dir, name));
  if (st.isSymbolicLink()) return "a symbolic link";
  if (!st.isFile()) return st.isDirectory() ? "a directory" : "not a regular file";
  return undefined;
}

export function checkStoredImage(dir: string, digest: string, publicKeyPem: string): ImageCheck {
  const sfs = join(dir, `${digest}.sfs`), mf = join(dir, `${digest}.manifest`);
  const bad = (problem: string, badChunks?: number[]): ImageCheck => ({ digest, ok: false, problem, badChunks });
  let manifestBytes: Uint8Array;
  try { manifestBytes = readFileSync(mf); } catch { return bad(`manifest ${mf} is missing: copy it from the server`); }
  let size: number;
  try { size = statSync(sfs).size; } catch { return bad(`image ${sfs} is missing: copy it from the server or run gc`); }
  let manifest;
  try { manifest = loadManifest(manifestBytes, publicKeyPem, { expectDigest: digest, expectSize: size }); } catch (e) {
    return bad(`${(e as Error).message}; copy both files again from the server`);
  }
  const h = hashFile(sfs, manifest.chunkSize);
  const badChunks = h.chunks.flatMap((c, i) => (c === manifest.chunks[i] ? [] : [i]));
  if (badChunks.length || h.digest !== digest) {
    return bad(`${badChunks.length} chunk(s) differ from the signed manifest (damaged copy): copy ${digest}.sfs again`, badChunks);
  }
  return { digest, ok: true };
}
