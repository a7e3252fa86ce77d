// The per-image encryption keys on the server: STATE/image-keys/<digest>.key (128 hex digits, 0600, directory 0700).
// Kept out of images/ (which mirrors copy) and out of the database: a key is only ever read to hand it to an enrolled
// node in its mutual-TLS config.
import { chmodSync, closeSync, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { DIGEST_RE } from "./paths";

export function imageKeysDir(stateDir: string): string {
  return join(stateDir, "image-keys");
}

export function imageKeyFile(stateDir: string, digest: string): string {
  if (!DIGEST_RE.test(digest)) throw new Error(`image key: "${digest.slice(0, 80)}" is not an image digest`);
  return join(imageKeysDir(stateDir), `${digest}.key`);
}

/** Stores the key of a new image; refuses to replace one (an image's key never changes). */
export function writeImageKey(stateDir: string, digest: string, key: Uint8Array): string {
  const dir = imageKeysDir(stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const path = imageKeyFile(stateDir, digest);
  const tmp = join(dir, `.${randomBytes(6).toString("hex")}.tmp`);
  const fd = openSync(tmp, "wx", 0o600);
  try { writeSync(fd, Buffer.from(key).toString("hex") + "\n"); fsyncSync(fd); } finally { closeSync(fd); }
  try {
    chmodSync(tmp, 0o600);
    linkSync(tmp, path); // fails if the file exists: no torn or replaced key
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new Error(`image key: ${path} already exists; an image's key is never replaced`);
    throw e;
  } finally { unlinkSync(tmp); }
  const dfd = openSync(dir, "r");
  try { fsyncSync(dfd); } finally { closeSync(dfd); }
  return path;
}

/** The key of an encrypted image, or undefined when the image has none (not encrypted). Throws on a damaged file. */
export function readImageKey(stateDir: string, digest: string): Buffer | undefined {
  if (!DIGEST_RE.test(digest)) return undefined;
  let text: string;
  try { text = readFileSync(imageKeyFile(stateDir, digest), "utf8"); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new Error(`image key: cannot read ${imageKeyFile(stateDir, digest)}: ${(e as Error).message}`);
  }
  const hex = text.trim();
  if (!/^[0-9a-f]{128}$/.test(hex)) throw new Error(`image key: ${imageKeyFile(stateDir, digest)} is not 128 hex digits; restore it from backup`);
  return Buffer.from(hex, "hex");
}

export function removeImageKey(stateDir: string, digest: string): void {
  try { unlinkSync(imageKeyFile(stateDir, digest)); } catch (e) { if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e; }
}

/**
 * `image gc`'s sweep: key files of images without a record (a pack interrupted after storing the key, an interrupted
 * gc) once older than the grace period. Returns their names as "image-keys/NAME".
 */
export function sweepImageKeys(stateDir: string, known: Set<string>, since: number, dryRun: boolean): string[] {
  const dir = imageKeysDir(stateDir);
  let names: string[] = [];
  try { names = readdirSync(dir); } catch { return []; }
  const out: string[] = [];
  for (const name of names) {
    const m = /^([0-9a-f]{64})\.key$/.exec(name);
    if ((m && known.has(m[1])) || (!m && !/^\.[0-9a-f]{12}\.tmp$/.test(name))) continue;
    try { if (statSync(join(dir, name)).mtimeMs >= since) continue; } catch { continue; }
    out.push(`image-keys/${name}`);
    if (!dryRun) try { unlinkSync(join(dir, name)); } catch { /* gone meanwhile */ }
  }
  return out;
}
