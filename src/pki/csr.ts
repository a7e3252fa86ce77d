// Parsing and verification of untrusted PKCS#10 certificate requests (CSRs) sent by enrolling nodes.
import { x509, type X509 } from "./x509.ts";
import { createHash } from "node:crypto";
import { fromPem } from "./pem.ts";


export const MAX_CSR_PEM = 16 * 1024;

export interface VerifiedCsr {
  publicKey: X509.PublicKey;
  /** SHA-256 of the SubjectPublicKeyInfo, hex: identifies the key (used to refuse replays). */
  keyId: string;
  keyAlgorithm: string;
}

export class CsrError extends Error {
  constructor(msg: string) { super(`certificate request: ${msg}`); this.name = "CsrError"; }
}

/** Which key types a node may enroll with: EC keys on the NIST curves a TPM offers, or RSA 2048..4096. */
function describeKey(alg: { name: string; namedCurve?: string; modulusLength?: number }): string {
  if (alg.name === "ECDSA" && (alg.namedCurve === "P-256" || alg.namedCurve === "P-384")) return `ECDSA ${alg.namedCurve}`;
  if (alg.name === "RSASSA-PKCS1-v1_5" && alg.modulusLength && alg.modulusLength >= 2048 && alg.modulusLength <= 4096) {
    return `RSA ${alg.modulusLength}`;
  }
  throw new CsrError(`key algorithm ${alg.name}${alg.namedCurve ? " " + alg.namedCurve : ""} is not accepted (use ECDSA P-256/P-384 or RSA 2048-4096)`);
}

/** Parses a PEM CSR and checks its self-signature (proof that the sender holds the private key). */
export async function verifyCsr(pem: unknown): Promise<VerifiedCsr> {
  if (typeof pem !== "string") throw new CsrError("must be a PEM string");
  if (pem.length > MAX_CSR_PEM) throw new CsrError(`larger than ${MAX_CSR_PEM} bytes`);
  let der: Uint8Array;
  try { der = fromPem(pem, "CERTIFICATE REQUEST"); } catch (e) { throw new CsrError((e as Error).message); }
  let csr: X509.Pkcs10CertificateRequest;
  let keyAlgorithm: string;
  try {
    csr = new x509.Pkcs10CertificateRequest(der);
    keyAlgorithm = describeKey(csr.publicKey.algorithm as { name: string });
  } catch (e) {
    if (e instanceof CsrError) throw e;
    throw new CsrError(`not a valid PKCS#10 structure (${(e as Error).message?.slice(0, 120)})`);
  }
  let ok = false;
  try { ok = await csr.verify(); } catch { ok = false; }
  if (!ok) throw new CsrError("signature does not verify (the request was altered or not signed by its key)");
  const keyId = createHash("sha256").update(new Uint8Array(csr.publicKey.rawData)).digest("hex");
  return { publicKey: csr.publicKey, keyId, keyAlgorithm };
}

/** Node side: generates an ECDSA P-256 key pair and a CSR for it. */
export async function makeCsr(commonName: string): Promise<{ csrPem: string; keys: CryptoKeyPair }> {
  const alg = { name: "ECDSA", namedCurve: "P-256" } as const;
  const keys = (await crypto.subtle.generateKey(alg, true, ["sign", "verify"])) as CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [commonName] }], keys, signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
  });
  return { csrPem: csr.toString("pem") + "\n", keys };
}
