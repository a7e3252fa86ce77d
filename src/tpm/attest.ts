// Node side of TPM-bound enrollment: the endorsement key, its certificate, the attestation key, ActivateCredential.
import { EK_CERT_NV, NV, TPM_RH } from "./constants";
import type { CreatedObject, Tpm } from "./commands";
import { RC, TpmError } from "./rc";
import { ekPolicyAuth, withPolicySession } from "./session";
import { type KeyAlg, akTemplate, ekTemplate } from "./templates";
import type { TpmPublic } from "./structures";

export interface AttestOptions {
  /** EK algorithm; default "ecc" (fast to derive), "rsa" for TPMs that only ship an RSA EK certificate. */
  ekAlg?: KeyAlg;
  endorsementAuth?: Uint8Array;
  ownerAuth?: Uint8Array;
}

/** Re-derives the EK (TCG template) and the airroot AK, runs fn with both loaded, and flushes them. */
export async function withKeys<T>(tpm: Tpm, o: AttestOptions, fn: (ek: CreatedObject, ak: CreatedObject) => Promise<T>): Promise<T> {
  const ek = await tpm.createPrimary(TPM_RH.ENDORSEMENT, ekTemplate(o.ekAlg ?? "ecc"), o.endorsementAuth);
  try {
    const ak = await tpm.createPrimary(TPM_RH.OWNER, akTemplate(), o.ownerAuth);
    try { return await fn(ek, ak); } finally { await tpm.flushQuietly(ak.handle); }
  } finally { await tpm.flushQuietly(ek.handle); }
}

export interface Identity {
  ekPublic: TpmPublic;
  ekCertificate?: Uint8Array;   // DER, from NV, when the manufacturer provisioned one
  akPublic: TpmPublic;
  akName: Uint8Array;
}

/** What the node sends the server at enrollment: EK public part (and certificate if any), AK public part and name. */
export async function readIdentity(tpm: Tpm, o: AttestOptions = {}): Promise<Identity> {
  const { ekPublic, akPublic, akName } = await withKeys(tpm, o, async (ek, ak) => ({ ekPublic: ek.public, akPublic: ak.public, akName: ak.name }));
  return { ekPublic, akPublic, akName, ekCertificate: await readEkCertificate(tpm, o.ekAlg ?? "ecc") };
}

/** The EK certificate from its TCG NV index, or undefined when there is none (common on swtpm and some VMs). */
export async function readEkCertificate(tpm: Tpm, alg: KeyAlg): Promise<Uint8Array | undefined> {
  const index = alg === "ecc" ? EK_CERT_NV.ECC_P256 : EK_CERT_NV.RSA2048;
  let size: number, attrs: number;
  try {
    const { public: pub } = await tpm.nvReadPublic(index);
    size = pub.dataSize; attrs = pub.attributes;
  } catch (e) {
    if (e instanceof TpmError && e.base === RC.HANDLE) return undefined;
    throw e;
  }
  if (!(attrs & NV.WRITTEN) || size === 0) return undefined;
  const limit = (await tpm.getProperties(0x12c, 1)).get(0x12c) ?? 512;
  const chunk = Math.min(Math.max(limit, 64), 2048);
  // EK certificate indices allow reading with their own (empty) auth or with owner auth, depending on vendor.
  const auth = attrs & NV.AUTHREAD ? index : TPM_RH.OWNER;
  return await tpm.nvRead(auth, index, size, 0, chunk);
}

/** Recovers the secret from a MakeCredential blob made for this TPM's EK and AK name. */
export async function activateCredential(tpm: Tpm, credentialBlob: Uint8Array, secret: Uint8Array, o: AttestOptions = {}): Promise<Uint8Array> {
  return await withKeys(tpm, o, (ek, ak) => withPolicySession(tpm, async (s) =>
    tpm.activateCredential(ak.handle, ek.handle, await ekPolicyAuth(tpm, s, o.endorsementAuth), credentialBlob, secret)));
}

/** The identity as the node sends it at enrollment: TPM2B_PUBLIC and DER certificate, base64. */
export interface WireIdentity { ekPublic: string; akPublic: string; ekCertificate?: string }

export function identityToWire(id: Identity): WireIdentity {
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");
  const tpm2b = (raw: Uint8Array) => { const o = new Uint8Array(raw.length + 2); o[0] = raw.length >> 8; o[1] = raw.length & 0xff; o.set(raw, 2); return o; };
  return {
    ekPublic: b64(tpm2b(id.ekPublic.raw)), akPublic: b64(tpm2b(id.akPublic.raw)),
    ...(id.ekCertificate ? { ekCertificate: b64(id.ekCertificate) } : {}),
  };
}
