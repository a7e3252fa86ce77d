// Selftest checks of the HTTPS range engine in this process, without FUSE: they need no root, and when the FUSE
// checks fail but these pass, the fault is in the mount layer rather than in TLS, the servers or the engine.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { RemoteImage, type ChunkVerifier } from "../source/image";
import { loadManifest, manifestVerifier } from "../image/manifest";
import { memoryLogger } from "../util/log";
import type { Fixtures } from "./fixtures";
import type { Report } from "./report";
import type { ImageServer } from "./servers";

// Bounded like the selftest mounts: EIO after 15 s without a server, a silent server abandoned after 2 s.
const ENGINE_OPTS = { ioTimeoutMs: 15_000, stallTimeoutMs: 2_000, connectTimeoutMs: 3_000, requestTimeoutMs: 10_000 };
const STEP = 4 * 1048576;

export async function engineChecks(report: Report, fx: Fixtures, servers: ImageServer[]): Promise<void> {
  const urls = servers.map((s) => s.url(fx.imageName));

  await report.check("https: a server certificate from an unrelated CA is refused (range engine)", async () => {
    let img: RemoteImage | undefined;
    try {
      img = await RemoteImage.open(urls, { ...ENGINE_OPTS, ca: fx.otherCaPem, log: memoryLogger() });
    } catch (e) {
      const msg = (e as Error).message;
      if (!/certificate|issuer|self[- ]signed|verify/i.test(msg)) throw new Error(`refused, but not for the certificate: ${msg}`);
      return "refused";
    }
    await img.close();
    throw new Error("the image opened although no server certificate chains to the given CA");
  });

  await report.check(`https: ${servers.length} servers, whole image read in-process, sha256 matches (range engine)`, async () => {
    const { sha256, status } = await readAll(urls, fx.caPem);
    if (sha256 !== fx.digest) throw new Error(`read sha256 ${sha256}, expected ${fx.digest}`);
    return `${status.sources.filter((s) => s.requests > 0).length} server(s) used, ${status.fetches} range requests`;
  }, 20_000);

  await report.check("https: a server sending tampered bytes is caught by the signed manifest (range engine)", async () => {
    const manifest = loadManifest(readFileSync(join(fx.imagesDir, fx.manifestName)), fx.imagePubPem, { expectDigest: fx.digest });
    const inner = manifestVerifier(manifest);
    let bad = 0;
    const verifier: ChunkVerifier = { chunkSize: inner.chunkSize, verify(i, b) {
      const ok = inner.verify(i, b);
      if (!ok) bad++;
      return ok;
    } };
    servers[0].serveFrom(fx.tamperedDir); // listed first, so it is asked first
    try {
      const { sha256 } = await readAll(urls, fx.caPem, verifier);
      if (sha256 !== fx.digest) throw new Error(`read sha256 ${sha256}, expected ${fx.digest}: tampered bytes got through`);
      if (bad === 0) throw new Error("no bad chunk was seen although the first server serves a tampered copy");
      return `${bad} bad chunk(s) rejected, bytes right`;
    } finally {
      servers[0].serveFrom(fx.imagesDir);
    }
  }, 20_000);
}

async function readAll(urls: string[], ca: string, verifier?: ChunkVerifier) {
  const img = await RemoteImage.open(urls, { ...ENGINE_OPTS, ca, verifier, log: memoryLogger() });
  try {
    const hasher = new Bun.CryptoHasher("sha256");
    for (let off = 0; off < img.size; off += STEP) hasher.update(await img.read(off, Math.min(STEP, img.size - off)));
    return { sha256: hasher.digest("hex"), status: img.status() };
  } finally {
    await img.close();
  }
}
