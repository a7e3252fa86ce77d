// The image-signing key pair in the state dir: STATE/keys/image.key (ed25519 PKCS#8 PEM, 0600) and image.pub (SPKI PEM).
import { generateKeyPairSync, createPrivateKey, createPublicKey } from "node:crypto";
import { chmodSync, closeSync, existsSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

export interface ImageKeyPaths { privateKey: string; publicKey: string }

export function imageKeyPaths(stateDir: string): ImageKeyPaths {
  return { privateKey: join(stateDir, "keys", "image.key"), publicKey: join(stateDir, "keys", "image.pub") };
}

/** Writes a file with the given mode, durably, and only if it does not exist yet (no clobbering, no torn file). */
function writeNewFile(path: string, data: string, mode: number): boolean {
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  const fd = openSync(tmp, "wx", mode);
  try { writeSync(fd, data); fsyncSync(fd); } finally { closeSync(fd); }
  chmodSync(tmp, mode); // the umask may have narrowed or (never) widened it
  try { linkSync(tmp, path); return true; } // link() fails if path exists: a concurrent creator wins cleanly
  catch (e) { if ((e as NodeJS.ErrnoException).code === "EEXIST") return false; throw e; }
  finally { unlinkSync(tmp); }
}

/**
 * Creates the image-signing key pair if it is missing (idempotent; `airroot serve init` and `image pack` call it).
 * Returns the paths and whether this call made the key pair (a public half restored from the private key counts as
 * kept). Throws if only the public half exists, rather than silently making a key that no node trusts.
 */
export function ensureImageKey(stateDir: string): ImageKeyPaths & { created: boolean } {
  const paths = imageKeyPaths(stateDir);
  const dir = join(stateDir, "keys");
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const hasKey = existsSync(paths.privateKey), hasPub = existsSync(paths.publicKey);
  if (hasKey && hasPub) return { ...paths, created: false };
  if (hasKey && !hasPub) {
    // The public half is derivable: restore it instead of failing.
    const pub = createPublicKey(createPrivateKey(readFileSync(paths.privateKey, "utf8")));
    writeNewFile(paths.publicKey, pub.export({ type: "spki", format: "pem" }) as string, 0o644);
    return { ...paths, created: false };
  }
  if (hasPub) {
    throw new Error(`image key: ${paths.publicKey} exists but ${paths.privateKey} is missing; restore the private key ` +
      `from backup (nodes trust that public key) or remove image.pub to start a new key`);
  }
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  if (writeNewFile(paths.privateKey, privateKey.export({ type: "pkcs8", format: "pem" }) as string, 0o600)) {
    writeNewFile(paths.publicKey, publicKey.export({ type: "spki", format: "pem" }) as string, 0o644);
    return { ...paths, created: true };
  }
  ensureImageKey(stateDir); // someone else created it concurrently: derive the pub from theirs
  return { ...paths, created: false };
}

export function readImagePrivateKey(stateDir: string): string {
  const p = imageKeyPaths(stateDir).privateKey;
  try { return readFileSync(p, "utf8"); } catch (e) {
    throw new Error(`image key: cannot read ${p} (${(e as Error).message}); run \`airroot serve init\` or \`airroot image pack\` first`);
  }
}

export function readImagePublicKey(stateDir: string): string {
  return readFileSync(imageKeyPaths(stateDir).publicKey, "utf8");
}
