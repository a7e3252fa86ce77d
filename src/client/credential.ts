// The node credential on disk: DIR/node.key (0600), DIR/node.crt, DIR/site-ca.crt, written so a crash never
// leaves a key readable by others or half-written.
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { NodeCredential } from "./api.ts";

export function credentialPaths(dir: string) {
  return { key: join(dir, "node.key"), cert: join(dir, "node.crt"), ca: join(dir, "site-ca.crt"), config: join(dir, "config.json") };
}

export function writePrivate(path: string, data: string): void {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, data, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

export function saveCredential(dir: string, cred: NodeCredential, siteCa: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const p = credentialPaths(dir);
  writePrivate(p.key, cred.keyPem);
  writePrivate(p.cert, cred.certPem);
  writePrivate(p.ca, siteCa);
}

export function loadCredential(dir: string): { keyPem: string; certPem: string } {
  const p = credentialPaths(dir);
  try { return { keyPem: readFileSync(p.key, "utf8"), certPem: readFileSync(p.cert, "utf8") }; } catch (e) {
    throw new Error(`reading the node credential in ${dir}: ${(e as Error).message}; run \`airroot enroll\` first`);
  }
}
