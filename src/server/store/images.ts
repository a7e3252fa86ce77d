// Store records for images: packed images, profiles (name -> current image, with history) and node boots per image.
import type { Database } from "bun:sqlite";
import { registerSchema } from "./db";

registerSchema("images-v1", `
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
`);

export interface ImageRecord { digest: string; size: number; created: number; profile: string }
export interface ProfileRecord { name: string; digest: string; updated: number }
export interface ProfileHistoryEntry { profile: string; digest: string; at: number }

/** Records an image (no-op if that digest is already known: images are immutable). */
export function addImage(db: Database, img: ImageRecord): void {
  db.query("INSERT OR IGNORE INTO images (digest, size, created, profile) VALUES (?, ?, ?, ?)")
    .run(img.digest, img.size, img.created, img.profile);
}

export function getImage(db: Database, digest: string): ImageRecord | null {
  return db.query("SELECT digest, size, created, profile FROM images WHERE digest = ?").get(digest) as ImageRecord | null;
}

export function listImages(db: Database): ImageRecord[] {
  return db.query("SELECT digest, size, created, profile FROM images ORDER BY created DESC, digest").all() as ImageRecord[];
}

export function removeImage(db: Database, digest: string): void {
  db.query("DELETE FROM images WHERE digest = ?").run(digest);
}

/** Points a profile at an image (which must be recorded) and appends to its history. */
export function setProfile(db: Database, name: string, digest: string, at = Date.now()): void {
  db.transaction(() => {
    db.query("INSERT INTO profiles (name, digest, updated) VALUES (?, ?, ?) " +
      "ON CONFLICT(name) DO UPDATE SET digest = excluded.digest, updated = excluded.updated").run(name, digest, at);
    db.query("INSERT INTO profile_history (profile, digest, at) VALUES (?, ?, ?)").run(name, digest, at);
  })();
}

export function getProfile(db: Database, name: string): ProfileRecord | null {
  return db.query("SELECT name, digest, updated FROM profiles WHERE name = ?").get(name) as ProfileRecord | null;
}

export function listProfiles(db: Database): ProfileRecord[] {
  return db.query("SELECT name, digest, updated FROM profiles ORDER BY name").all() as ProfileRecord[];
}

export function profileHistory(db: Database, name: string): ProfileHistoryEntry[] {
  return db.query("SELECT profile, digest, at FROM profile_history WHERE profile = ? ORDER BY id DESC").all(name) as ProfileHistoryEntry[];
}

/** Digests that some profile currently points at (never garbage). */
export function currentImageDigests(db: Database): string[] {
  return (db.query("SELECT DISTINCT digest FROM profiles").all() as { digest: string }[]).map((r) => r.digest);
}

/** Called by the node API when a node reports booting from an image (part B's self/status or self/config). */
export function recordBoot(db: Database, node: string, digest: string, at = Date.now()): void {
  db.query("INSERT INTO image_boots (node, digest, at) VALUES (?, ?, ?) " +
    "ON CONFLICT(node, digest) DO UPDATE SET at = max(at, excluded.at)").run(node, digest, at);
}

/** Digests any node booted from at or after `sinceMs` (ms since epoch). */
export function imagesBootedSince(db: Database, sinceMs: number): string[] {
  return (db.query("SELECT DISTINCT digest FROM image_boots WHERE at >= ?").all(sinceMs) as { digest: string }[]).map((r) => r.digest);
}
