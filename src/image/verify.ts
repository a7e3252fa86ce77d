// Chunk verification in the read path: checks each fetched chunk against the signed manifest's SHA-256 before the
// kernel may see it, plus a small benchmark of what that costs.
import { createHash } from "node:crypto";
import type { Manifest } from "./manifest";

/** Same shape as the range engine's interface in src/source/image.ts (kept structural to avoid an import cycle). */
export interface ChunkVerifier {
  chunkSize: number;
  verify(index: number, bytes: Uint8Array): boolean;
  size?: number; // the image size the manifest describes: the range engine refuses servers offering another
}

/** Expected length of chunk `index` (the last chunk of an image is usually short). */
export function chunkLength(m: Pick<Manifest, "size" | "chunkSize">, index: number): number {
  return Math.min(m.chunkSize, m.size - index * m.chunkSize);
}

/**
 * A verifier for one manifest. verify() is true only for the exact bytes of that chunk: wrong index, wrong length
 * (a truncated or padded reply) or a different hash are all false; it never throws on bad input.
 */
export function manifestVerifier(m: Manifest): ChunkVerifier {
  // All hashes in one flat buffer: 32 bytes per chunk instead of a 64-char string each, and a cheap compare.
  const expected = new Uint8Array(m.chunks.length * 32);
  m.chunks.forEach((h, i) => expected.set(Buffer.from(h, "hex"), i * 32));
  const count = m.chunks.length;
  return {
    chunkSize: m.chunkSize,
    size: m.size,
    verify(index: number, bytes: Uint8Array): boolean {
      if (!Number.isInteger(index) || index < 0 || index >= count) return false;
      if (!(bytes instanceof Uint8Array) || bytes.length !== chunkLength(m, index)) return false;
      const got = sha256(bytes);
      const want = expected.subarray(index * 32, index * 32 + 32);
      for (let i = 0; i < 32; i++) if (got[i] !== want[i]) return false;
      return true;
    },
  };
}

function sha256(bytes: Uint8Array): Uint8Array {
  // Bun's native hasher (BoringSSL); node:crypto is the fallback for other runtimes.
  if (typeof Bun !== "undefined") return new Bun.CryptoHasher("sha256").update(bytes).digest() as Uint8Array;
  return createHash("sha256").update(bytes).digest();
}

export interface VerifyBench { chunkSize: number; bytes: number; seconds: number; mbPerSecond: number }

/**
 * Measures read-path verification throughput: hashes `totalBytes` in `chunkSize` pieces through a real verifier.
 * Bounded by totalBytes (default 256 MiB); MB = 10^6 bytes.
 */
export function benchVerify(opts: { chunkSize?: number; totalBytes?: number } = {}): VerifyBench {
  const chunkSize = opts.chunkSize ?? 256 * 1024; // image pack's default chunk size
  const total = Math.max(chunkSize, opts.totalBytes ?? 256 * 1024 * 1024);
  const chunk = new Uint8Array(chunkSize);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24; // not all zero, no allocation per round
  const hash = createHash("sha256").update(chunk).digest("hex");
  const v = manifestVerifier({ format: 1, digest: hash, size: chunkSize, chunkSize, chunks: [hash], created: "", profile: "bench" });
  const rounds = Math.ceil(total / chunkSize);
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) if (!v.verify(0, chunk)) throw new Error("benchVerify: verifier rejected a good chunk");
  const seconds = (performance.now() - t0) / 1000;
  const bytes = rounds * chunkSize;
  return { chunkSize, bytes, seconds, mbPerSecond: bytes / 1e6 / seconds };
}
