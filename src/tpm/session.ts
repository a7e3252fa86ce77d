// Authorization sessions: policy sessions (PCR policy, EK PolicySecret), and salted sessions with encryption.
import { createDecipheriv, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { HASHES, TPM_ALG, TPM_CC, TPM_RH, TPM_SE, ccName } from "./constants";
import { type Authorization, type ResponseAuth, type Tpm, policyAuth } from "./commands";
import { kdfa, makeSeed, u32 } from "./kdf";
import { Reader, TpmFormatError } from "./marshal";
import { type PcrSelection, type TpmPublic, digest } from "./structures";

export { passwordAuth, policyAuth } from "./commands";

/**
 * Runs `fn` with a fresh policy (or trial) session and flushes the session afterwards, whatever happens.
 * The session is unbound and unsalted: it proves policy, not secrecy, which is all airroot needs from it.
 */
export async function withPolicySession<T>(tpm: Tpm, fn: (session: number) => Promise<T>, opts: { trial?: boolean; hash?: number } = {}): Promise<T> {
  const { handle } = await tpm.startAuthSession(opts.trial ? TPM_SE.TRIAL : TPM_SE.POLICY, opts.hash ?? TPM_ALG.SHA256, new Uint8Array(randomBytes(16)));
  try {
    return await fn(handle);
  } finally {
    // After a successful command without continueSession the TPM has flushed it already: ignore that error.
    await tpm.flushQuietly(handle);
  }
}

/** A policy session satisfied by PolicyPCR over the current values of `sel`, ready to authorize one command. */
export async function pcrPolicyAuth(tpm: Tpm, session: number, sel: PcrSelection[]): Promise<Authorization> {
  await tpm.policyPcr(session, sel);
  return policyAuth(session);
}

/** A policy session satisfying the TCG EK policy (PolicySecret with the endorsement hierarchy). */
export async function ekPolicyAuth(tpm: Tpm, session: number, endorsementAuth?: Uint8Array): Promise<Authorization> {
  await tpm.policySecret(TPM_RH.ENDORSEMENT, session, endorsementAuth);
  return policyAuth(session);
}

/** The TPM's own PolicyPCR digest over the current PCR values (trial session), to cross-check software policy math. */
export async function trialPcrPolicy(tpm: Tpm, sel: PcrSelection[], hash = TPM_ALG.SHA256): Promise<Uint8Array> {
  return await withPolicySession(tpm, async (s) => {
    await tpm.policyPcr(s, sel);
    return await tpm.policyGetDigest(s);
  }, { trial: true, hash });
}

/** A response failed its session HMAC: the reply was altered or did not come from the TPM we salted the session to. */
export class TpmIntegrityError extends TpmFormatError {
  override name = "TpmIntegrityError";
}

const ATTR_ENCRYPT = 0x40; // TPMA_SESSION.encrypt: the TPM encrypts the first response parameter

/**
 * A policy session salted to a key in the TPM (the storage primary), with AES-128-CFB parameter encryption.
 * Only that TPM can decrypt the salt, so only it knows the session key: replies are authenticated by HMAC, and a
 * response parameter (the unsealed key) crosses the bus encrypted. Protects against an interposer on the TPM bus.
 */
export class SaltedPolicySession {
  private nonceCaller = new Uint8Array(0);
  private constructor(private tpm: Tpm, readonly handle: number, private sessionKey: Uint8Array, private nonceTpm: Uint8Array) {}

  static async start(tpm: Tpm, saltKey: { handle: number; public: TpmPublic }): Promise<SaltedPolicySession> {
    const { seed: salt, secret } = makeSeed(saltKey.public, "SECRET");
    const nonceCaller = new Uint8Array(randomBytes(32));
    const { handle, nonceTpm } = await tpm.startAuthSession(TPM_SE.POLICY, HASH, nonceCaller, {
      tpmKey: saltKey.handle, encryptedSalt: secret, symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    });
    const sessionKey = kdfa(HASH, salt, "ATH", nonceTpm, nonceCaller, HASHES[HASH].size * 8);
    return new SaltedPolicySession(tpm, handle, sessionKey, nonceTpm);
  }

  /** The authorization for one command: fresh caller nonce, HMAC over cpHash (names of handles + parameters). */
  authorize(cc: number, handleNames: Uint8Array[], params: Uint8Array, encryptResponse = true): Authorization {
    this.nonceCaller = new Uint8Array(randomBytes(32));
    const attributes = encryptResponse ? ATTR_ENCRYPT : 0;
    const cpHash = digest(HASH, u32(cc), ...handleNames, params);
    // No authValue in the key: the policy has no PolicyAuthValue and the sealed object's authValue is empty.
    const hmac = createHmac(HASHES[HASH].node, this.sessionKey)
      .update(cpHash).update(this.nonceCaller).update(this.nonceTpm).update(new Uint8Array([attributes])).digest();
    return { handle: this.handle, nonce: this.nonceCaller, attributes, hmac: new Uint8Array(hmac) };
  }

  /** Checks the response HMAC (rpHash over rc=0, cc and the still-encrypted parameters) and rolls the TPM nonce. */
  verify(cc: number, paramBytes: Uint8Array, auth: ResponseAuth): void {
    const rpHash = digest(HASH, u32(0), u32(cc), paramBytes);
    const expect = createHmac(HASHES[HASH].node, this.sessionKey)
      .update(rpHash).update(auth.nonce).update(this.nonceCaller).update(new Uint8Array([auth.attributes])).digest();
    if (auth.hmac.length !== expect.length || !timingSafeEqual(auth.hmac, expect)) {
      throw new TpmIntegrityError(`TPM2_${ccName(cc)}: response HMAC mismatch (reply altered on the way, or not from this TPM)`);
    }
    this.nonceTpm = auth.nonce;
  }

  /** Decrypts the first response parameter (a TPM2B) in place of a copy: AES-128-CFB keyed from the session. */
  decryptFirstParam(paramBytes: Uint8Array): Uint8Array {
    const r = new Reader(paramBytes, "encrypted response parameter");
    const n = r.u16("size");
    r.bytes(n, "data"); // bounds check
    const kv = kdfa(HASH, this.sessionKey, "CFB", this.nonceTpm, this.nonceCaller, 256);
    const d = createDecipheriv("aes-128-cfb", kv.subarray(0, 16), kv.subarray(16, 32));
    const out = new Uint8Array(paramBytes);
    out.set(Buffer.concat([d.update(paramBytes.subarray(2, 2 + n)), d.final()]), 2);
    return out;
  }
}

const HASH = TPM_ALG.SHA256;

/** Unseal with the salted session (policy already satisfied): verified reply, key decrypted only here. */
export async function unsealSalted(tpm: Tpm, item: number, itemName: Uint8Array, session: SaltedPolicySession): Promise<Uint8Array> {
  const auth = session.authorize(TPM_CC.Unseal, [itemName], new Uint8Array(0));
  const rsp = await tpm.execute({ cc: TPM_CC.Unseal, handles: [item], auths: [auth], context: `object 0x${item.toString(16)}` });
  session.verify(TPM_CC.Unseal, rsp.paramBytes, rsp.auths[0]);
  const r = new Reader(session.decryptFirstParam(rsp.paramBytes), "Unseal response");
  const data = r.tpm2b("outData", 128);
  r.end("Unseal response");
  return data;
}
