// Server-side TPM2 MakeCredential in pure TypeScript (TPM 2.0 Part 1 "Credential Protection") and enrollment challenges.
import { createCipheriv, createHmac } from "node:crypto";
import { TPM_ALG } from "./constants";
import { hashOf, kdfa, makeSeed } from "./kdf";
import { Reader, TpmFormatError, Writer } from "./marshal";
import { type TpmPublic, objectName, publicFromBytes } from "./structures";

export { kdfa, kdfe, publicKeyOf } from "./kdf";

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
