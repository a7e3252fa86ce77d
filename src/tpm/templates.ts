// Public-area templates: TCG storage root key, TCG endorsement keys, airroot's attestation key and sealed data object.
import { OBJ, TPM_ALG, TPM_ECC } from "./constants";
import { fromHex } from "./marshal";
import type { PublicTemplate } from "./structures";

const zeros = (n: number) => new Uint8Array(n);
const AES128CFB = { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB };

/** TCG EK Credential Profile: PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256. */
export const EK_POLICY_SHA256 = fromHex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa");

const STORAGE_ATTRS = OBJ.fixedTPM | OBJ.fixedParent | OBJ.sensitiveDataOrigin | OBJ.userWithAuth | OBJ.noDA | OBJ.restricted | OBJ.decrypt;
const EK_ATTRS = OBJ.fixedTPM | OBJ.fixedParent | OBJ.sensitiveDataOrigin | OBJ.adminWithPolicy | OBJ.restricted | OBJ.decrypt;

export type KeyAlg = "ecc" | "rsa";

/** TCG TPM v2.0 Provisioning Guidance storage root key (SRK) template, ECC P-256 or RSA 2048. */
export function srkTemplate(alg: KeyAlg): PublicTemplate {
  return alg === "ecc"
    ? { type: TPM_ALG.ECC, nameAlg: TPM_ALG.SHA256, attributes: STORAGE_ATTRS, authPolicy: zeros(0), symmetric: AES128CFB,
        scheme: { alg: TPM_ALG.NULL }, ecc: { curve: TPM_ECC.NIST_P256, kdf: { alg: TPM_ALG.NULL }, x: zeros(32), y: zeros(32) } }
    : { type: TPM_ALG.RSA, nameAlg: TPM_ALG.SHA256, attributes: STORAGE_ATTRS, authPolicy: zeros(0), symmetric: AES128CFB,
        scheme: { alg: TPM_ALG.NULL }, rsa: { keyBits: 2048, exponent: 0, n: zeros(256) } };
}

/** TCG EK Credential Profile templates L-1 (RSA 2048) and L-2 (ECC P-256): the same EK tpm2_createek makes. */
export function ekTemplate(alg: KeyAlg): PublicTemplate {
  return alg === "ecc"
    ? { type: TPM_ALG.ECC, nameAlg: TPM_ALG.SHA256, attributes: EK_ATTRS, authPolicy: EK_POLICY_SHA256, symmetric: AES128CFB,
        scheme: { alg: TPM_ALG.NULL }, ecc: { curve: TPM_ECC.NIST_P256, kdf: { alg: TPM_ALG.NULL }, x: zeros(32), y: zeros(32) } }
    : { type: TPM_ALG.RSA, nameAlg: TPM_ALG.SHA256, attributes: EK_ATTRS, authPolicy: EK_POLICY_SHA256, symmetric: AES128CFB,
        scheme: { alg: TPM_ALG.NULL }, rsa: { keyBits: 2048, exponent: 0, n: zeros(256) } };
}

/**
 * airroot's attestation key: an ECC P-256 restricted signing primary in the owner hierarchy. It is re-derived
 * from the owner seed on every boot (nothing to store), and its name is what MakeCredential binds to.
 */
export function akTemplate(): PublicTemplate {
  return {
    type: TPM_ALG.ECC, nameAlg: TPM_ALG.SHA256,
    attributes: OBJ.fixedTPM | OBJ.fixedParent | OBJ.sensitiveDataOrigin | OBJ.userWithAuth | OBJ.restricted | OBJ.sign,
    authPolicy: zeros(0), symmetric: { alg: TPM_ALG.NULL }, scheme: { alg: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 },
    ecc: { curve: TPM_ECC.NIST_P256, kdf: { alg: TPM_ALG.NULL }, x: zeros(0), y: zeros(0) },
  };
}

/** Attributes of our sealed data object: bound to this TPM, usable only through its policy (no userWithAuth). */
export const SEALED_ATTRS = OBJ.fixedTPM | OBJ.fixedParent | OBJ.noDA;

/** A sealed data object (keyed hash, no scheme) whose only authorization is `policy`. */
export function sealedTemplate(policy: Uint8Array): PublicTemplate {
  return {
    type: TPM_ALG.KEYEDHASH, nameAlg: TPM_ALG.SHA256, attributes: SEALED_ATTRS, authPolicy: policy,
    scheme: { alg: TPM_ALG.NULL }, keyedHash: { unique: zeros(0) },
  };
}
