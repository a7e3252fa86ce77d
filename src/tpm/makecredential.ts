// Server-side TPM2 MakeCredential in pure TypeScript (TPM 2.0 Part 1 "Credential Protection"), with KDFa/KDFe.
import { createCipheriv, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, publicEncrypt, randomBytes, constants as cryptoConstants, type KeyObject } from "node:crypto";
import { HASHES, TPM_ALG, TPM_ECC } from "./constants";
import { Reader, TpmFormatError, Writer, concat } from "./marshal";
import { type TpmPublic, digest, objectName, publicFromBytes } from "./structures";

const u32 = (n: number) => new Writer().u32(n).finish();
const withNul = (label: string) => new TextEncoder().encode(label.endsWith("\0") ? label : `${label}\0`);

function hashOf(alg: number): { node: string; size: number } {
  const h = HASHES[alg];
  if (!h) throw new TpmFormatError(`hash algorithm 0x${alg.toString(16)} is not supported`);
  return h;
}

/** KDFa (SP800-108 counter mode with HMAC), as in TPM 2.0 Part 1 §11.4.10.2. */
export function kdfa(hashAlg: number, key: Uint8Array, label: string, contextU: Uint8Array, contextV: Uint8Array, bits: number): Uint8Array {
  const h = hashOf(hashAlg);
  const bytes = Math.ceil(bits / 8);
  const parts: Uint8Array[] = [];
  for (let i = 1, have = 0; have < bytes; i++) {
    const m = createHmac(h.node, key);
    m.update(u32(i)).update(withNul(label)).update(contextU).update(contextV).update(u32(bits));
    const block = new Uint8Array(m.digest());
    parts.push(block); have += block.length;
  }
  const out = concat(...parts).slice(0, bytes);
  if (bits % 8) out[0] &= (1 << (bits % 8)) - 1;
  return out;
}

/** KDFe (SP800-56A concatenation KDF) for ECDH-derived seeds, TPM 2.0 Part 1 §11.4.10.3. */
export function kdfe(hashAlg: number, z: Uint8Array, label: string, partyU: Uint8Array, partyV: Uint8Array, bits: number): Uint8Array {
  const bytes = Math.ceil(bits / 8);
  const parts: Uint8Array[] = [];
  for (let i = 1, have = 0; have < bytes; i++) {
    const block = digest(hashAlg, u32(i), z, withNul(label), partyU, partyV);
    parts.push(block); have += block.length;
  }
  const out = concat(...parts).slice(0, bytes);
  if (bits % 8) out[0] &= (1 << (bits % 8)) - 1;
  return out;
}

const b64u = (b: Uint8Array) => Buffer.from(b).toString("base64url");
const CURVES: Record<number, { node: string; jwk: string; size: number }> = {
  [TPM_ECC.NIST_P256]: { node: "prime256v1", jwk: "P-256", size: 32 },
  [TPM_ECC.NIST_P384]: { node: "secp384r1", jwk: "P-384", size: 48 },
};

/** A node:crypto public key for an RSA or ECC TPM public area (e.g. an EK). */
export function publicKeyOf(pub: TpmPublic): KeyObject {
  try {
    return toKeyObject(pub);
  } catch (e) {
    if (e instanceof TpmFormatError) throw e;
    // node:crypto rejects points off the curve and malformed moduli: untrusted input, so a format error.
    throw new TpmFormatError(`the ${pub.rsa ? "RSA" : "ECC"} public key in the TPM public area is invalid: ${(e as Error).message}`);
  }
}

function toKeyObject(pub: TpmPublic): KeyObject {
  if (pub.rsa) {
    const e = pub.rsa.exponent || 65537;
    const eb = new Uint8Array([e >>> 24, (e >>> 16) & 0xff, (e >>> 8) & 0xff, e & 0xff]);
    let i = 0;
    while (i < 3 && eb[i] === 0) i++;
    if (pub.rsa.n.length < 128) throw new TpmFormatError(`RSA modulus of ${pub.rsa.n.length} bytes is too small`);
    return createPublicKey({ key: { kty: "RSA", n: b64u(pub.rsa.n), e: b64u(eb.subarray(i)) }, format: "jwk" });
  }
  if (pub.ecc) {
    const c = CURVES[pub.ecc.curve];
    if (!c) throw new TpmFormatError(`ECC curve 0x${pub.ecc.curve.toString(16)} is not supported`);
    if (pub.ecc.x.length !== c.size || pub.ecc.y.length !== c.size) throw new TpmFormatError(`ECC point coordinates must be ${c.size} bytes`);
    return createPublicKey({ key: { kty: "EC", crv: c.jwk, x: b64u(pub.ecc.x), y: b64u(pub.ecc.y) }, format: "jwk" });
  }
  throw new TpmFormatError(`object type 0x${pub.type.toString(16)} has no asymmetric public key`);
}

/** The seed and its encryption to `pub` ("secret"): RSA-OAEP with a label, or ECDH + KDFe (Part 1 Annex B/C). */
export function makeSeed(pub: TpmPublic, label: string): { seed: Uint8Array; secret: Uint8Array } {
  const h = hashOf(pub.nameAlg);
  if (pub.rsa) {
    const seed = new Uint8Array(randomBytes(h.size));
    const secret = publicEncrypt({ key: publicKeyOf(pub), padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: h.node, oaepLabel: Buffer.from(withNul(label)) }, seed);
    return { seed, secret: new Uint8Array(secret) };
  }
  if (pub.ecc) {
    const c = CURVES[pub.ecc.curve];
    const peer = publicKeyOf(pub);
    const eph = generateKeyPairSync("ec", { namedCurve: c.node });
    const jwk = eph.publicKey.export({ format: "jwk" }) as { x: string; y: string };
    const ex = new Uint8Array(Buffer.from(jwk.x, "base64url")), ey = new Uint8Array(Buffer.from(jwk.y, "base64url"));
    const z = new Uint8Array(diffieHellman({ privateKey: eph.privateKey, publicKey: peer }));
    const seed = kdfe(pub.nameAlg, z, label, ex, pub.ecc.x, h.size * 8);
    return { seed, secret: new Writer().tpm2b(ex).tpm2b(ey).finish() };
  }
  throw new TpmFormatError(`cannot encrypt a seed to object type 0x${pub.type.toString(16)}`);
}

export interface MadeCredential {
  /** TPM2B_ID_OBJECT contents: integrity HMAC (as TPM2B) followed by the encrypted credential. */
  credentialBlob: Uint8Array;
  /** TPM2B_ENCRYPTED_SECRET contents: the seed encrypted to the EK. */
  secret: Uint8Array;
}

/**
 * MakeCredential: encrypts `credential` (at most one digest of the EK's nameAlg) so that only the TPM holding
 * `ek`, with an object named `objectName` loaded, can recover it through ActivateCredential.
 */
export function makeCredential(ek: TpmPublic, objectName: Uint8Array, credential: Uint8Array): MadeCredential {
  const h = hashOf(ek.nameAlg);
  if (credential.length === 0 || credential.length > h.size) throw new RangeError(`credential must be 1..${h.size} bytes, got ${credential.length}`);
  if (!(ek.attributes & 0x20000) || !(ek.attributes & 0x10000)) throw new TpmFormatError("the EK public area is not a restricted decryption key");
  const sym = ek.symmetric;
  // AES-192 is legal in TPM 2.0 but Bun's node:crypto has no aes-192-cfb; no EK template uses it.
  if (!sym || sym.alg !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB || ![128, 256].includes(sym.keyBits ?? 0)) {
    throw new TpmFormatError("the EK's symmetric algorithm must be AES-128-CFB or AES-256-CFB");
  }
  let made: { seed: Uint8Array; secret: Uint8Array };
  try {
    made = makeSeed(ek, "IDENTITY");
  } catch (e) {
    if (e instanceof TpmFormatError) throw e;
    throw new TpmFormatError(`cannot encrypt to this EK: ${(e as Error).message}`);
  }
  const { seed, secret } = made;
  const symKey = kdfa(ek.nameAlg, seed, "STORAGE", objectName, new Uint8Array(0), sym.keyBits!);
  const plain = new Writer().tpm2b(credential).finish();
  const c = createCipheriv(`aes-${sym.keyBits}-cfb`, symKey, Buffer.alloc(16));
  const encIdentity = new Uint8Array(Buffer.concat([c.update(plain), c.final()]));
  const hmacKey = kdfa(ek.nameAlg, seed, "INTEGRITY", new Uint8Array(0), new Uint8Array(0), h.size * 8);
  const outerHmac = new Uint8Array(createHmac(h.node, hmacKey).update(encIdentity).update(objectName).digest());
  return { credentialBlob: new Writer().tpm2b(outerHmac).bytes(encIdentity).finish(), secret };
}

/** tpm2-tools credential file (tpm2_makecredential -o / tpm2_activatecredential -i): magic, version, two TPM2Bs. */
const TOOLS_MAGIC = 0xbadcc0de;
export function toToolsCredentialFile(m: MadeCredential): Uint8Array {
  return new Writer().u32(TOOLS_MAGIC).u32(1).tpm2b(m.credentialBlob).tpm2b(m.secret).finish();
}
export function fromToolsCredentialFile(file: Uint8Array): MadeCredential {
  const r = new Reader(file, "credential file");
  if (r.u32("magic") !== TOOLS_MAGIC) throw new TpmFormatError("credential file: bad magic (not a tpm2-tools credential blob)");
  const version = r.u32("version");
  if (version !== 1) throw new TpmFormatError(`credential file: unsupported version ${version}`);
  const credentialBlob = r.tpm2b("credentialBlob", 1024), secret = r.tpm2b("secret", 1024);
  r.end("credential file");
  return { credentialBlob, secret };
}

/** What the server sends a node to prove its TPM: base64 fields, ready for JSON. */
export interface EnrollmentChallenge { credentialBlob: string; secret: string }

const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
function fromB64(s: string, what: string): Uint8Array {
  if (typeof s !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length > 8192) throw new TpmFormatError(`${what}: not base64`);
  return new Uint8Array(Buffer.from(s, "base64"));
}

/**
 * Server side of TPM-bound enrollment. Checks that `ekPublic` looks like an endorsement key and `akPublic` like a
 * TPM-resident restricted signing key (both TPM2B_PUBLIC, base64, as the node sends them), computes the AK's name
 * itself (never trust a name from the node), and encrypts `secret` so that only a TPM holding both can recover it.
 */
export function makeEnrollmentChallenge(ekPublicB64: string, akPublicB64: string, secret: Uint8Array): EnrollmentChallenge & { akName: string } {
  const ek = publicFromBytes(fromB64(ekPublicB64, "ekPublic"));
  const ak = publicFromBytes(fromB64(akPublicB64, "akPublic"));
  const EK_NEEDS = 0x2 | 0x10 | 0x10000 | 0x20000; // fixedTPM fixedParent restricted decrypt
  if ((ek.attributes & EK_NEEDS) !== EK_NEEDS || (ek.attributes & 0x40000)) throw new TpmFormatError("ekPublic is not a fixed, restricted decryption key (not an EK)");
  const AK_NEEDS = 0x2 | 0x10 | 0x10000 | 0x40000; // fixedTPM fixedParent restricted sign
  if ((ak.attributes & AK_NEEDS) !== AK_NEEDS || (ak.attributes & 0x20000)) throw new TpmFormatError("akPublic is not a fixed, restricted signing key");
  const name = objectName(ak);
  const made = makeCredential(ek, name, secret);
  return { credentialBlob: b64(made.credentialBlob), secret: b64(made.secret), akName: Buffer.from(name).toString("hex") };
}

/** Node side: decodes a challenge's base64 fields (for activateCredential). */
export function challengeFromWire(c: EnrollmentChallenge): MadeCredential {
  return { credentialBlob: fromB64(c.credentialBlob, "credentialBlob"), secret: fromB64(c.secret, "secret") };
}
