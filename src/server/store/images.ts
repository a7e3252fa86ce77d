// Store records for images: packed images, profiles (name -> current image, with history) and node boots per image.
import { bigints, registerSchema } from "./migrations.ts";
import { num, type Db } from "./sql.ts";

const IMAGES_V1 = `
CREATE TABLE IF NOT EXISTS images (
  digest  TEXT PRIMARY KEY,          -- sha256 hex of STATE/images/<digest>.sfs
  size    INTEGER NOT NULL,
  created INTEGER NOT NULL,          -- ms since epoch
  profile TEXT NOT NULL              -- profile it was first packed for
);
CREATE TABLE IF NOT EXISTS profiles (
  name    TEXT PRIMARY KEY,
  digest  TEXT NOT NULL REFERENCES images(digest),
  updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS profile_history (
  id      INTEGER PRIMARY KEY AUTOINCREMENT,
  profile TEXT NOT NULL,
  digest  TEXT NOT NULL,
  at      INTEGER NOT NULL
);
-- Latest boot of each node from each image; gc keeps images booted within its grace period.
CREATE TABLE IF NOT EXISTS image_boots (
  node    TEXT NOT NULL,
  digest  TEXT NOT NULL,
  at      INTEGER NOT NULL,
  PRIMARY KEY (node, digest)
);
CREATE INDEX IF NOT EXISTS image_boots_at ON image_boots(at);
`;
// PostgreSQL: a sequence instead of AUTOINCREMENT, BIGINT for sizes and times.
registerSchema("images-v1", IMAGES_V1, bigints(IMAGES_V1).replace("id      BIGINT PRIMARY KEY AUTOINCREMENT", "id      BIGSERIAL PRIMARY KEY"));

export interface ImageRecord { digest: string; size: number; created: number; profile: string }
export interface ProfileRecord { name: string; digest: string; updated: number }
export interface ProfileHistoryEntry { profile: string; digest: string; at: number }

const imageOf = (r: ImageRecord): ImageRecord => ({ ...r, size: num(r.size), created: num(r.created) });
const profileOf = (r: ProfileRecord): ProfileRecord => ({ ...r, updated: num(r.updated) });

/** Records an image (no-op if that digest is already known: images are immutable). */
export async function addImage(db: Db, img: ImageRecord): Promise<void> {
  await db.run("INSERT INTO images (digest, size, created, profile) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
    img.digest, img.size, img.created, img.profile);
}

export async function getImage(db: Db, digest: string): Promise<ImageRecord | null> {
  const r = await db.get<ImageRecord>("SELECT digest, size, created, profile FROM images WHERE digest = ?", digest);
  return r ? imageOf(r) : null;
}

export async function listImages(db: Db): Promise<ImageRecord[]> {
  return (await db.all<ImageRecord>("SELECT digest, size, created, profile FROM images ORDER BY created DESC, digest")).map(imageOf);
}

export async function removeImage(db: Db, digest: string): Promise<void> {
  await db.run("DELETE FROM images WHERE digest = ?", digest);
}

/** Removes an image's record unless a profile points at it (checked in the same statement); true when removed. */
export async function removeImageIfUnused(db: Db, digest: string): Promise<boolean> {
  return (await db.run("DELETE FROM images WHERE digest = ? AND NOT EXISTS (SELECT 1 FROM profiles WHERE profiles.digest = images.digest)", digest)).changes === 1;
}

/** Points a profile at an image (which must be recorded) and appends to its history. */
export async function setProfile(db: Db, name: string, digest: string, at = Date.now()): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.run("INSERT INTO profiles (name, digest, updated) VALUES (?, ?, ?) " +
      "ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated", name, digest, at);
    await tx.run("INSERT INTO profile_history (profile, digest, at) VALUES (?, ?, ?)", name, digest, at);
  });
}

export async function getProfile(db: Db, name: string): Promise<ProfileRecord | null> {
  const r = await db.get<ProfileRecord>("SELECT name, digest, updated FROM profiles WHERE name = ?", name);
  return r ? profileOf(r) : null;
}

export async function listProfiles(db: Db): Promise<ProfileRecord[]> {
  return (await db.all<ProfileRecord>("SELECT name, digest, updated FROM profiles ORDER BY name")).map(profileOf);
}

export async function profileHistory(db: Db, name: string): Promise<ProfileHistoryEntry[]> {
  return (await db.all<ProfileHistoryEntry>("SELECT profile, digest, at FROM profile_history WHERE profile = ? ORDER BY id DESC", name))
    .map((r) => ({ ...r, at: num(r.at) }));
}

/** Digests that some profile currently points at (never garbage). */
export async function currentImageDigests(db: Db): Promise<string[]> {
  return (await db.all<{ digest: string }>("SELECT DISTINCT digest FROM profiles")).map((r) => r.digest);
}

/** Called by the node API when a node reports booting from an image (part B's self/status or self/config). */
export async function recordBoot(db: Db, node: string, digest: string, at = Date.now()): Promise<void> {
  await db.run("INSERT INTO image_boots (node, digest, at) VALUES (?, ?, ?) " +
    "ON CONFLICT (node, digest) DO UPDATE SET at = CASE WHEN excluded.at > image_boots.at THEN excluded.at ELSE image_boots.at END", node, digest, at);
}

/** Digests any node booted from at or after `sinceMs` (ms since epoch). */
export async function imagesBootedSince(db: Db, sinceMs: number): Promise<string[]> {
  return (await db.all<{ digest: string }>("SELECT DISTINCT digest FROM image_boots WHERE at >= ?", sinceMs)).map((r) => r.digest);
}
