// Fetches and checks the signed image manifest before the mount starts, and wraps its chunk verifier so
// the status channel can count the bad chunks servers have sent.
import type { ChunkVerifier } from "../source/image";
import type { Logger } from "../util/log";
import { loadManifest, manifestVerifier, MAX_MANIFEST_BYTES } from "../image/manifest";
import { fetchBounded } from "../util/boundedfetch";

export interface LoadedVerifier {
  manifestUrl: string;
  size: number;
  verifier: ChunkVerifier;
  badChunks(): number;
  /** The manifest's check of one chunk, not counted as a server's bad chunk (the fill re-checks its local copy). */
  check(index: number, data: Uint8Array): boolean;
}

export async function loadImageVerifier(manifestUrl: string, publicKeyPem: string, ca: Buffer | undefined, log: Logger,
  expectDigest?: string): Promise<LoadedVerifier> {
  let bytes: Uint8Array;
  if (!/^https:\/\//i.test(manifestUrl)) {
    // A local file: the caller fetched (and checked) it already; read it once, bounded.
    const file = Bun.file(manifestUrl);
    if (file.size > MAX_MANIFEST_BYTES) throw new Error(`manifest ${manifestUrl} too large (${file.size} bytes)`);
    bytes = new Uint8Array(await file.arrayBuffer());
  } else try {
    bytes = await fetchBounded(manifestUrl, { ca: ca?.toString(), maxBytes: MAX_MANIFEST_BYTES, timeoutMs: 60_000 });
  } catch (e) {
    throw new Error(`cannot fetch the image manifest ${manifestUrl}: ${(e as Error).message}`);
  }
  let manifest;
  try {
    manifest = loadManifest(bytes, publicKeyPem, { expectDigest });
  } catch (e) {
    throw new Error(`refusing to mount: manifest ${manifestUrl} is not valid: ${(e as Error).message}`);
  }
  const inner = manifestVerifier(manifest);
  let bad = 0;
  log.info(`verified manifest ${manifestUrl}: ${manifest.size} bytes in ${inner.chunkSize}-byte chunks`);
  return {
    manifestUrl, size: manifest.size, badChunks: () => bad, check: (index, data) => inner.verify(index, data),
    verifier: {
      chunkSize: inner.chunkSize,
      size: manifest.size, // servers offering another size are excluded when the image opens
      verify(index, data) {
        const ok = inner.verify(index, data);
        if (!ok) bad++;
        return ok;
      },
    },
  };
}
