// Points a profile at an image that is already stored (roll back, or share one image between profiles).
import { existsSync, readFileSync } from "node:fs";
import type { Db } from "../server/store/sql.ts";
import { getProfile, listImages, setProfile } from "../server/store/images";
import { isValidProfileName, loadManifest } from "./manifest";
import { imageFile, manifestFile } from "./paths";
import { readImagePublicKey } from "./keys";

/** Resolves a full digest or a unique prefix of at least 8 hex digits among stored images. */
export async function resolveDigest(db: Db, text: string): Promise<string> {
  const t = text.trim().toLowerCase();
  if (!/^[0-9a-f]{8,64}$/.test(t)) throw new Error(`"${text}" is not an image digest (8 to 64 hex digits; see \`airroot image list\`)`);
  const hits = (await listImages(db)).map((i) => i.digest).filter((d) => d.startsWith(t));
  if (hits.length === 0) throw new Error(`no stored image ${t}: see \`airroot image list\``);
  if (hits.length > 1) throw new Error(`${t} matches ${hits.length} images: give more digits`);
  return hits[0];
}

/**
 * Sets `profile` to the stored image `digest` after checking that its files are there and its manifest verifies
 * (nodes would refuse it otherwise). Returns the previous digest, if any.
 */
export async function assignProfile(opts: { stateDir: string; db: Db; profile: string; digest: string; at?: number }): Promise<string | null> {
  if (!isValidProfileName(opts.profile)) throw new Error(`invalid profile name "${opts.profile}": use letters, digits, '.', '_' or '-' (max 64)`);
  const digest = await resolveDigest(opts.db, opts.digest);
  const sfs = imageFile(opts.stateDir, digest), mf = manifestFile(opts.stateDir, digest);
  if (!existsSync(sfs) || !existsSync(mf)) throw new Error(`image ${digest} is recorded but its files are missing: re-pack its tree`);
  loadManifest(readFileSync(mf), readImagePublicKey(opts.stateDir), { expectDigest: digest }); // throws a ManifestError naming the problem
  const before = (await getProfile(opts.db, opts.profile))?.digest ?? null;
  await setProfile(opts.db, opts.profile, digest, opts.at);
  return before;
}
