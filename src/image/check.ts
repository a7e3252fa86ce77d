// Checks stored images against their signed manifests (on the server or on a mirror's copy): signature, size, whole
// digest and every chunk, so bit rot or a bad sync is found before a node hits it.
import { readdirSync, readFileSync, statSync } from "node:fs";
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
    if (m) digests.add(m[1]);
  }
  return [...digests].sort().map((d) => checkStoredImage(dir, d, publicKeyPem));
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
