// TPM key derivation and seed encryption (TPM 2.0 Part 1 §11.4.10, Annex B/C): KDFa, KDFe, salts and seeds
// encrypted to an RSA or ECC public key. Shared by MakeCredential (server) and salted sessions (node).
import { createHmac, createPublicKey, diffieHellman, generateKeyPairSync, publicEncrypt, randomBytes, constants as cryptoConstants, type KeyObject } from "node:crypto";
import { HASHES, TPM_ECC } from "./constants";
import { TpmFormatError, Writer, concat } from "./marshal";
import { type TpmPublic, digest } from "./structures";

export const u32 = (n: number) => new Writer().u32(n).finish();
const withNul = (label: string) => new TextEncoder().encode(label.endsWith("\0") ? label : `${label}\0`);

export function hashOf(alg: number): { node: string; size: number } {
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

