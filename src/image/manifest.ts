// The signed image manifest: its data model, its exact byte encoding, signing, and strict parsing of untrusted copies.
//
// File layout (UTF-8, three lines, each ending in "\n"):
//   airroot-manifest v1
//   {"format":1,...}                      <- payload: canonical JSON, one line, fixed key order
//   ed25519 <base64 signature> <key id>
// The signature covers SIGNING_CONTEXT + the payload bytes exactly as stored, so verification never depends on
// re-serialising JSON; the payload is only parsed after its signature checked out (untrusted bytes never reach
// JSON.parse). The key id (first 16 hex of SHA-256 over the SPKI DER) only names the key for error messages.
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from "node:crypto";
import type { ImageEncryption } from "./encrypt";

export const MANIFEST_FORMAT = 1;
export const MAGIC = "airroot-manifest v1";
export const SIGNING_CONTEXT = "airroot image manifest v1\0"; // domain separation: this key signs nothing else
/** Upper bound on a manifest file: 64 MiB holds ~1M chunk hashes, i.e. a 250 GiB image at 256 KiB chunks. */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;
export const MIN_CHUNK_SIZE = 4096;
export const MAX_CHUNK_SIZE = 64 * 1024 * 1024;
const MAX_IMAGE_SIZE = 2 ** 50; // 1 PiB: far beyond any root image, well inside exact double integers
const HEX64 = /^[0-9a-f]{64}$/;
const PROFILE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface Manifest {
  format: number;          // MANIFEST_FORMAT
  digest: string;          // lowercase hex SHA-256 of the whole .sfs file (also its name)
  size: number;            // bytes
  chunkSize: number;       // power of two; the verification and fetch unit
  chunks: string[];        // lowercase hex SHA-256 of each chunk; the last one may be short
  created: string;         // ISO 8601 UTC
  profile: string;         // profile the image was first packed for (informational)
  /** Only for an encrypted image: then digest, size and chunks are the ciphertext's (what mirrors serve). */
  encryption?: ImageEncryption;
}

export class ManifestError extends Error {
  override name = "ManifestError";
}

export function isValidProfileName(name: string): boolean {
  return PROFILE_RE.test(name);
}

export function chunkCount(size: number, chunkSize: number): number {
  return Math.ceil(size / chunkSize);
}

/** The payload bytes: canonical JSON (fixed key order, no whitespace), so one manifest has exactly one encoding. */
export function encodePayload(m: Manifest): Uint8Array {
  const ordered = {
    format: m.format, digest: m.digest, size: m.size, chunkSize: m.chunkSize,
    created: m.created, profile: m.profile,
    // Absent, not null, for a plain image: manifests signed before encryption existed keep their exact bytes.
    ...(m.encryption ? { encryption: {
      cipher: m.encryption.cipher, keySize: m.encryption.keySize, sectorSize: m.encryption.sectorSize,
      plainSize: m.encryption.plainSize, keyCheck: m.encryption.keyCheck,
    } } : {}),
    chunks: m.chunks,
  };
  return new TextEncoder().encode(JSON.stringify(ordered));
}

export function keyId(publicKey: KeyObject | string): string {
  const key = typeof publicKey === "string" ? createPublicKey(publicKey) : publicKey;
  const der = key.export({ type: "spki", format: "der" });
  return createHash("sha256").update(der).digest("hex").slice(0, 16);
}

function signedMessage(payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(SIGNING_CONTEXT), payload]);
}

/** Serialises and signs a manifest with the image key (ed25519 PKCS#8 PEM). */
export function signManifest(m: Manifest, privateKeyPem: string): Uint8Array {
  validateManifest(m); // never sign something a reader would refuse
  const key = createPrivateKey(privateKeyPem);
  if (key.asymmetricKeyType !== "ed25519") throw new ManifestError(`signing manifest: image key is ${key.asymmetricKeyType}, expected ed25519`);
  const payload = encodePayload(m);
  const sig = sign(null, signedMessage(payload), key).toString("base64");
  const text = `${MAGIC}\n${new TextDecoder().decode(payload)}\ned25519 ${sig} ${keyId(createPublicKey(key))}\n`;
  return new TextEncoder().encode(text);
}

export interface LoadManifestOptions {
  /** The digest the caller was told to boot (e.g. from the server's config): refuses a different, older image. */
  expectDigest?: string;
  /** Size of the image as a source reported it (Content-Length): refuses a mismatch. */
  expectSize?: number;
}

/**
 * Parses and verifies a manifest fetched from anywhere. Throws ManifestError naming what is wrong; never returns a
 * manifest whose signature does not verify under publicKeyPem.
 */
export function loadManifest(bytes: Uint8Array, publicKeyPem: string, opts: LoadManifestOptions = {}): Manifest {
  const fail = (why: string): never => { throw new ManifestError(`image manifest refused: ${why}`); };
  let pub: KeyObject;
  try { pub = createPublicKey(publicKeyPem); } catch (e) {
    throw new ManifestError(`image public key unreadable (${(e as Error).message}): pass the SPKI PEM from STATE/keys/image.pub`);
  }
  if (pub.asymmetricKeyType !== "ed25519") fail(`image public key is ${pub.asymmetricKeyType}, expected ed25519`);
  if (bytes.length > MAX_MANIFEST_BYTES) fail(`${bytes.length} bytes is over the ${MAX_MANIFEST_BYTES}-byte limit`);

  // Split into exactly three "\n"-terminated lines without decoding the whole thing as text first.
  const nl1 = bytes.indexOf(10);
  const nl2 = nl1 < 0 ? -1 : bytes.indexOf(10, nl1 + 1);
  const nl3 = nl2 < 0 ? -1 : bytes.indexOf(10, nl2 + 1);
  if (nl1 < 0 || nl2 < 0 || nl3 < 0 || nl3 !== bytes.length - 1) fail("not an airroot manifest (expected three lines)");
  const magic = Buffer.from(bytes.subarray(0, nl1)).toString("latin1");
  if (magic !== MAGIC) fail(`not an airroot manifest v1 (first line ${JSON.stringify(magic.slice(0, 40))})`);
  const payload = bytes.subarray(nl1 + 1, nl2);
  const sigLine = Buffer.from(bytes.subarray(nl2 + 1, nl3)).toString("latin1");
  const sm = /^ed25519 ([A-Za-z0-9+/]{86}==) ([0-9a-f]{16})$/.exec(sigLine);
  if (!sm) fail("signature line malformed (expected \"ed25519 <base64> <key id>\")");
  const sig = Buffer.from(sm![1], "base64");
  if (sig.length !== 64 || sig.toString("base64") !== sm![1]) fail("signature is not 64 bytes of canonical base64");
  let ok = false;
  try { ok = verify(null, signedMessage(payload), pub, sig); } catch { ok = false; }
  if (!ok) {
    const expected = keyId(pub);
    fail(sm![2] === expected
      ? "bad signature (the manifest was altered after signing)"
      : `signed by key ${sm![2]}, not by the trusted image key ${expected}`);
  }

  // Authenticated from here on, but still checked strictly: a signing bug must not turn into wrong bytes.
  let raw: unknown;
  try { raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload)); } catch (e) {
    fail(`payload is not JSON (${(e as Error).message})`);
  }
  const m = validateManifest(raw);
  const canonical = encodePayload(m);
  if (canonical.length !== payload.length || !Buffer.from(canonical).equals(Buffer.from(payload))) fail("payload is not in canonical form");
  if (opts.expectDigest !== undefined && m.digest !== opts.expectDigest) {
    fail(`it describes image ${m.digest}, but ${opts.expectDigest} was expected (stale or substituted manifest)`);
  }
  if (opts.expectSize !== undefined) assertImageSize(m, opts.expectSize, "the image source");
  return m;
}

/** Throws unless a source's image size equals the manifest's (call it for every source when probing). */
export function assertImageSize(m: Manifest, size: number, source: string): void {
  if (size !== m.size) {
    throw new ManifestError(`image size mismatch: ${source} has ${size} bytes, the signed manifest says ${m.size} ` +
      `for ${m.digest}: that source serves a different file; fix or drop it`);
  }
}

const FIELDS = ["format", "digest", "size", "chunkSize", "created", "profile", "chunks"];
const OPTIONAL_FIELDS = ["encryption"];
const ENCRYPTION_FIELDS = ["cipher", "keySize", "sectorSize", "plainSize", "keyCheck"];

/** Checks shape and internal consistency of a (parsed) manifest; returns it typed. */
export function validateManifest(raw: unknown): Manifest {
  const fail = (why: string): never => { throw new ManifestError(`image manifest invalid: ${why}`); };
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("payload is not a JSON object");
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!FIELDS.includes(k) && !OPTIONAL_FIELDS.includes(k)) fail(`unknown field ${JSON.stringify(k.slice(0, 40))}`);
  for (const k of FIELDS) if (!(k in o)) fail(`missing field "${k}"`);
  if (o.format !== MANIFEST_FORMAT) fail(`format ${JSON.stringify(o.format)} is not supported (this airroot reads format ${MANIFEST_FORMAT})`);
  if (typeof o.digest !== "string" || !HEX64.test(o.digest)) fail("digest is not 64 lowercase hex digits");
  const size = o.size, cs = o.chunkSize;
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size <= 0 || size > MAX_IMAGE_SIZE) fail("size is not a positive integer");
  if (typeof cs !== "number" || !Number.isSafeInteger(cs) || cs < MIN_CHUNK_SIZE || cs > MAX_CHUNK_SIZE || (cs & (cs - 1)) !== 0) {
    fail(`chunkSize must be a power of two between ${MIN_CHUNK_SIZE} and ${MAX_CHUNK_SIZE}`);
  }
  if (typeof o.created !== "string" || o.created.length > 40 || Number.isNaN(Date.parse(o.created))) fail("created is not a timestamp");
  if (typeof o.profile !== "string" || !PROFILE_RE.test(o.profile)) fail("profile name is invalid");
  if (!Array.isArray(o.chunks)) fail("chunks is not an array");
  const chunks = o.chunks as unknown[];
  const want = chunkCount(size as number, cs as number);
  if (chunks.length !== want) fail(`${chunks.length} chunk hashes for ${size} bytes in ${cs}-byte chunks (expected ${want})`);
  for (let i = 0; i < chunks.length; i++) {
    const c = chunks[i];
    if (typeof c !== "string" || !HEX64.test(c)) fail(`chunk hash ${i} is not 64 lowercase hex digits`);
  }
  const encryption = "encryption" in o ? validateEncryption(o.encryption, size as number, fail) : undefined;
  return {
    format: MANIFEST_FORMAT, digest: o.digest as string, size: size as number, chunkSize: cs as number,
    chunks: chunks as string[], created: o.created as string, profile: o.profile as string,
    ...(encryption ? { encryption } : {}),
  };
}

/** Only what nodes can open: aes-xts-plain64 with a 64-byte key, sectors of 512..4096 bytes covering the image. */
function validateEncryption(raw: unknown, size: number, fail: (why: string) => never): ImageEncryption {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("encryption is not an object");
  const e = raw as Record<string, unknown>;
  for (const k of Object.keys(e)) if (!ENCRYPTION_FIELDS.includes(k)) fail(`unknown encryption field ${JSON.stringify(k.slice(0, 40))}`);
  for (const k of ENCRYPTION_FIELDS) if (!(k in e)) fail(`missing encryption field "${k}"`);
  if (e.cipher !== "aes-xts-plain64") fail(`encryption cipher ${JSON.stringify(String(e.cipher).slice(0, 40))} is not supported (this airroot opens aes-xts-plain64)`);
  if (e.keySize !== 64) fail(`encryption key size ${JSON.stringify(e.keySize)} is not supported (64 bytes: AES-256-XTS)`);
  const ss = e.sectorSize;
  if (typeof ss !== "number" || ![512, 1024, 2048, 4096].includes(ss)) fail("encryption sectorSize must be 512, 1024, 2048 or 4096");
  if (size % (ss as number) !== 0) fail(`image size ${size} is not a whole number of ${ss}-byte encryption sectors`);
  const ps = e.plainSize;
  if (typeof ps !== "number" || !Number.isSafeInteger(ps) || ps <= 0 || ps > size || ps <= size - (ss as number)) {
    fail(`encryption plainSize must be within the last ${ss}-byte sector of the ${size}-byte image`);
  }
  if (typeof e.keyCheck !== "string" || !HEX64.test(e.keyCheck)) fail("encryption keyCheck is not 64 lowercase hex digits");
  return { cipher: "aes-xts-plain64", keySize: 64, sectorSize: ss as number, plainSize: ps as number, keyCheck: e.keyCheck as string };
}

// The verifier lives in ./verify (it only needs the Manifest type); re-exported so callers need one import.
export { manifestVerifier, type ChunkVerifier } from "./verify";
