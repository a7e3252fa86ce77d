// `image gc`: removes images no profile points at and no node booted from recently, plus leftovers of failed packs
// and of interrupted gc runs.
import { readdirSync, statSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import type { Db } from "../server/store/sql.ts";
import { IMAGE_NAME_RE, imageFile, imagesDir, manifestFile, PACK_TMP_PREFIX } from "./paths";
import { removeImageKey, sweepImageKeys } from "./imagekeys";
import { currentImageDigests, imagesBootedSince, listImages, removeImageIfUnused } from "../server/store/images";

export const DEFAULT_GC_GRACE_MS = 7 * 86_400_000;

export interface GcOptions {
  stateDir: string;
  db: Db;
  graceMs?: number;     // default 7 days
  dryRun?: boolean;
  now?: number;         // ms since epoch
}

export interface GcResult {
  removed: string[];                          // digests removed (or that would be, with dryRun)
  kept: { digest: string; why: string }[];
  tmpRemoved: string[];                       // stale files: temporaries of interrupted packs, unrecorded images
  bytesFreed: number;
}

/**
 * An image is kept if a profile points at it, if any node booted from it within the grace period, or if it was
 * packed within the grace period (a node may be booting from it before its boot is recorded).
 */
export async function gcImages(opts: GcOptions): Promise<GcResult> {
  const now = opts.now ?? Date.now();
  const grace = opts.graceMs ?? DEFAULT_GC_GRACE_MS;
  const since = now - grace;
  const current = new Set(await currentImageDigests(opts.db));
  const booted = new Set(await imagesBootedSince(opts.db, since));
  const res: GcResult = { removed: [], kept: [], tmpRemoved: [], bytesFreed: 0 };
  for (const img of await listImages(opts.db)) {
    const why = current.has(img.digest) ? "current image of a profile"
      : booted.has(img.digest) ? "a node booted from it within the grace period"
      : img.created >= since ? "packed within the grace period" : null;
    if (why) { res.kept.push({ digest: img.digest, why }); continue; }
    if (opts.dryRun) { res.removed.push(img.digest); res.bytesFreed += img.size; continue; }
    // Record first, re-checked in the same DELETE, so a profile switched to this image meanwhile (a re-pack of an old
    // tree) keeps it (a profile set at the same instant elsewhere is refused by the foreign key, and gc keeps the
    // image); then the files. An interrupted gc leaves orphan files, which the sweep below removes.
    const gone = await removeImageIfUnused(opts.db, img.digest).catch((e: Error) => {
      if (/foreign key/i.test(e.message)) return false;
      throw e;
    });
    if (!gone) { res.kept.push({ digest: img.digest, why: "became current during gc" }); continue; }
    res.removed.push(img.digest);
    res.bytesFreed += img.size;
    for (const f of [manifestFile(opts.stateDir, img.digest), imageFile(opts.stateDir, img.digest)]) unlinkQuiet(f);
    removeImageKey(opts.stateDir, img.digest); // an encrypted image's key goes with it
  }
  // Sweep: temporaries of interrupted packs, and image files without a record (interrupted gc, lost database rows),
  // once they are older than the grace period (a pack renames the file into place before it records it).
  const known = new Set((await listImages(opts.db)).map((i) => i.digest));
  let names: string[] = [];
  try { names = readdirSync(imagesDir(opts.stateDir)); } catch { /* no images dir yet */ }
  for (const name of names) {
    const m = IMAGE_NAME_RE.exec(name);
    if (!name.startsWith(PACK_TMP_PREFIX) && !(m && !known.has(m[1]))) continue;
    const p = join(imagesDir(opts.stateDir), name);
    try { if (statSync(p).mtimeMs >= since) continue; } catch { continue; } // a pack may be running right now
    res.tmpRemoved.push(name);
    if (!opts.dryRun) unlinkQuiet(p);
  }
  res.tmpRemoved.push(...sweepImageKeys(opts.stateDir, known, since, opts.dryRun ?? false));
  return res;
}

function unlinkQuiet(path: string): void {
  try { unlinkSync(path); } catch (e) { if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e; }
}
