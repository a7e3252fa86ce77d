// OpenSSH keys: ed25519 generation, the "openssh-key-v1" private key file, and strict parsing of public key lines.
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { SshFormatError, SshReader, SshWriter } from "./sshwire.ts";

export interface Ed25519Key {
  seed: Uint8Array; // 32-byte private seed
  pub: Uint8Array;  // 32-byte public key
}

/** A parsed, structurally valid public key in SSH wire form. */
export interface SshPublicKey {
  type: string;
  blob: Uint8Array;
  comment: string;
}

const b64url = (s: string) => new Uint8Array(Buffer.from(s, "base64url"));

export function generateEd25519(): Ed25519Key {
  const { privateKey } = generateKeyPairSync("ed25519");
  const jwk = privateKey.export({ format: "jwk" });
  return { seed: b64url(jwk.d!), pub: b64url(jwk.x!) };
}

function keyObject(k: Ed25519Key): KeyObject {
  return createPrivateKey({
    format: "jwk",
    key: { kty: "OKP", crv: "Ed25519", d: Buffer.from(k.seed).toString("base64url"), x: Buffer.from(k.pub).toString("base64url") },
  });
}

/** Ed25519 signature of `data`, in SSH signature encoding (string "ssh-ed25519", string sig). */
export function signEd25519(k: Ed25519Key, data: Uint8Array): Uint8Array {
  const sig = sign(null, data, keyObject(k));
  return new SshWriter().string("ssh-ed25519").string(new Uint8Array(sig)).bytes();
}

export function ed25519Blob(pub: Uint8Array): Uint8Array {
  return new SshWriter().string("ssh-ed25519").string(pub).bytes();
}

export function formatPublicKey(blob: Uint8Array, comment = ""): string {
  const type = new SshReader(blob).text();
  return `${type} ${Buffer.from(blob).toString("base64")}${comment ? " " + comment : ""}\n`;
}

const ECDSA_POINT: Record<string, number> = { nistp256: 65, nistp384: 97, nistp521: 133 };
const JWK_CURVE: Record<string, string> = { nistp256: "P-256", nistp384: "P-384", nistp521: "P-521" };

/**
 * Throws unless `q` (0x04 || X || Y) is a point on the named curve. A point off the curve (an invalid-curve key) is
 * not a key anyone holds, and OpenSSH itself refuses it; the SSH CA must never sign one. node:crypto refuses to import
 * such a point (coordinates out of range or not satisfying the curve equation, the point at infinity included).
 */
export function checkEcdsaPoint(curve: string, q: Uint8Array, what = "ECDSA key"): void {
  const size = ECDSA_POINT[curve];
  if (!size) throw new SshFormatError(`${what}: unsupported curve ${curve}`);
  if (q.length !== size || q[0] !== 4) throw new SshFormatError(`${what}: point is not an uncompressed point of the right size`);
  const n = (size - 1) / 2, b64 = (b: Uint8Array) => Buffer.from(b).toString("base64url");
  try {
    createPublicKey({ format: "jwk", key: { kty: "EC", crv: JWK_CURVE[curve], x: b64(q.subarray(1, 1 + n)), y: b64(q.subarray(1 + n)) } });
  } catch {
    throw new SshFormatError(`${what}: the public point is not on the ${curve} curve (not a valid key; refused)`);
  }
}

/** Checks the fields of a public key blob for the types sshd accepts as host keys. */
function checkBlob(blob: Uint8Array): string {
  const r = new SshReader(blob, "public key");
  const type = r.text(64);
  if (type === "ssh-ed25519") {
    if (r.bytes().length !== 32) throw new SshFormatError("ssh-ed25519 public key must be 32 bytes");
  } else if (type.startsWith("ecdsa-sha2-")) {
    const curve = type.slice("ecdsa-sha2-".length);
    if (!(curve in ECDSA_POINT)) throw new SshFormatError(`unsupported ECDSA curve ${curve}`);
    if (r.text(32) !== curve) throw new SshFormatError("ECDSA key: curve name does not match the key type");
    checkEcdsaPoint(curve, r.bytes());
  } else if (type === "ssh-rsa") {
    const e = r.bytes(), n = r.bytes();
    if (e.length === 0 || e.length > 8) throw new SshFormatError("RSA key: bad exponent");
    const bits = (n.length - (n[0] === 0 ? 1 : 0)) * 8;
    if (bits < 2048 || bits > 16384) throw new SshFormatError(`RSA key: ${bits}-bit modulus is outside 2048..16384`);
  } else {
    throw new SshFormatError(`public key type "${type}" is not accepted (ssh-ed25519, ecdsa-sha2-nistp*, ssh-rsa)`);
  }
  r.end();
  return type;
}

/** Parses one "TYPE BASE64 [comment]" line from an untrusted source; throws SshFormatError on anything odd. */
export function parsePublicKey(line: unknown): SshPublicKey {
  if (typeof line !== "string") throw new SshFormatError("public key must be a string");
  if (line.length > 16_384) throw new SshFormatError("public key line is too long");
  const m = /^\s*([A-Za-z0-9@.-]{1,64}) ([A-Za-z0-9+/]+={0,2})(?: ([\x20-\x7e]{0,200}))?\s*$/.exec(line);
  if (!m) throw new SshFormatError("public key line must be \"TYPE BASE64 [comment]\"");
  const blob = new Uint8Array(Buffer.from(m[2], "base64"));
  const type = checkBlob(blob);
  if (type !== m[1]) throw new SshFormatError(`public key line says ${m[1]} but the key is ${type}`);
  return { type, blob, comment: (m[3] ?? "").trim() };
}

const MAGIC = new TextEncoder().encode("openssh-key-v1\0");

function armour(bytes: Uint8Array): string {
  const lines = Buffer.from(bytes).toString("base64").match(/.{1,70}/g) ?? [];
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${lines.join("\n")}\n-----END OPENSSH PRIVATE KEY-----\n`;
}

/** The unencrypted OpenSSH private key file format that ssh-keygen writes and reads. */
export function encodeOpenSshPrivate(k: Ed25519Key, comment = ""): string {
  const check = randomBytes(4).readUInt32BE(0);
  const priv = new SshWriter().u32(check).u32(check).string("ssh-ed25519").string(k.pub)
    .string(new Uint8Array(Buffer.concat([k.seed, k.pub]))).string(comment).bytes();
  const pad = (8 - (priv.length % 8)) % 8;
  const padded = new Uint8Array(priv.length + pad);
  padded.set(priv);
  for (let i = 0; i < pad; i++) padded[priv.length + i] = i + 1;
  const body = new SshWriter().raw(MAGIC).string("none").string("none").string("").u32(1)
    .string(ed25519Blob(k.pub)).string(padded).bytes();
  return armour(body);
}

/** Reads an unencrypted ed25519 key written by encodeOpenSshPrivate or ssh-keygen. */
export function decodeOpenSshPrivate(text: string): Ed25519Key {
  const m = /-----BEGIN OPENSSH PRIVATE KEY-----([\sA-Za-z0-9+/=]+)-----END OPENSSH PRIVATE KEY-----/.exec(text);
  if (!m) throw new SshFormatError("not an OpenSSH private key file");
  const buf = new Uint8Array(Buffer.from(m[1].replace(/\s+/g, ""), "base64"));
  if (buf.length < MAGIC.length || !MAGIC.every((c, i) => buf[i] === c)) throw new SshFormatError("OpenSSH private key: bad magic");
  const r = new SshReader(buf.subarray(MAGIC.length), "OpenSSH private key");
  if (r.text() !== "none" || r.text() !== "none") throw new SshFormatError("OpenSSH private key is encrypted; an unencrypted key is required");
  r.bytes();
  if (r.u32() !== 1) throw new SshFormatError("OpenSSH private key: expected exactly one key");
  r.bytes();
  const p = new SshReader(r.bytes(), "OpenSSH private key section");
  if (p.u32() !== p.u32()) throw new SshFormatError("OpenSSH private key: check words differ (corrupt or encrypted)");
  if (p.text() !== "ssh-ed25519") throw new SshFormatError("OpenSSH private key: only ssh-ed25519 is supported");
  const pub = p.bytes(), both = p.bytes();
  if (pub.length !== 32 || both.length !== 64) throw new SshFormatError("OpenSSH private key: bad ed25519 key lengths");
  return { seed: both.slice(0, 32), pub: pub.slice() };
}
