// Where images live in the state dir: STATE/images/<sha256>.sfs and STATE/images/<sha256>.manifest.
import { join } from "node:path";

export const IMAGE_NAME_RE = /^([0-9a-f]{64})\.(sfs|manifest)$/;
export const DIGEST_RE = /^[0-9a-f]{64}$/;

export function imagesDir(stateDir: string): string {
  return join(stateDir, "images");
}

export function imageFile(stateDir: string, digest: string): string {
  return join(imagesDir(stateDir), `${digest}.sfs`);
}

export function manifestFile(stateDir: string, digest: string): string {
  return join(imagesDir(stateDir), `${digest}.manifest`);
}

/** Temporary files of an unfinished pack start with this; gc removes old ones. Never matches IMAGE_NAME_RE. */
export const PACK_TMP_PREFIX = ".pack-";
