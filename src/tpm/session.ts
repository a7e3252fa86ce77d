// Authorization sessions: policy sessions (PCR policy, EK PolicySecret), and salted sessions with encryption.
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { HASHES, TPM_ALG, TPM_CC, TPM_RH, TPM_SE, ccName } from "./constants";
import { type Authorization, type CreatedObject, type ResponseAuth, type Tpm, createParams, parseCreateResponse, policyAuth } from "./commands";
import { kdfa, makeSeed, u32 } from "./kdf";
import { Reader, TpmFormatError } from "./marshal";
import { type PcrSelection, type PublicTemplate, type TpmPublic, digest } from "./structures";

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

const ATTR_DECRYPT = 0x20; // TPMA_SESSION.decrypt: the first command parameter is encrypted by us
const ATTR_ENCRYPT = 0x40; // TPMA_SESSION.encrypt: the TPM encrypts the first response parameter
const HASH = TPM_ALG.SHA256;

/**
 * A session salted to a key in the TPM (the storage primary), with AES-128-CFB parameter encryption. Only that
 * TPM can decrypt the salt, so only it knows the session key: replies are authenticated by HMAC, and a secret
 * parameter (the key being sealed, or unsealed) crosses the bus encrypted. Protects against a bus interposer.
 * Used for one command: neither side keeps the session (continueSession is clear), and we flush it anyway.
 * Our objects and the storage key have empty authValues, so the HMAC and CFB keys are the session key alone.
 */
export class SaltedSession {
  private nonceCaller = new Uint8Array(0);
  private constructor(readonly handle: number, private sessionKey: Uint8Array, private nonceTpm: Uint8Array) {}

  /** type: TPM_SE.POLICY (then satisfy the policy before use) or TPM_SE.HMAC. */
  static async start(tpm: Tpm, saltKey: { handle: number; public: TpmPublic }, type: number = TPM_SE.POLICY): Promise<SaltedSession> {
    const { seed: salt, secret } = makeSeed(saltKey.public, "SECRET");
    const nonceCaller = new Uint8Array(randomBytes(32));
    const { handle, nonceTpm } = await tpm.startAuthSession(type, HASH, nonceCaller, {
      tpmKey: saltKey.handle, encryptedSalt: secret, symmetric: { alg: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    });
    const sessionKey = kdfa(HASH, salt, "ATH", nonceTpm, nonceCaller, HASHES[HASH].size * 8);
    return new SaltedSession(handle, sessionKey, nonceTpm);
  }

  private cfb(newer: Uint8Array, older: Uint8Array, decrypt: boolean, data: Uint8Array): Uint8Array {
    const kv = kdfa(HASH, this.sessionKey, "CFB", newer, older, 256);
    const c = (decrypt ? createDecipheriv : createCipheriv)("aes-128-cfb", kv.subarray(0, 16), kv.subarray(16, 32));
    return new Uint8Array(Buffer.concat([c.update(data), c.final()]));
  }

  /** Replaces the contents of the TPM2B at the start of `params` with `f(contents)`. */
  private static firstParam(params: Uint8Array, f: (b: Uint8Array) => Uint8Array, what: string): Uint8Array {
    const r = new Reader(params, what);
    const n = r.u16("size");
    r.bytes(n, "data"); // bounds check
    const out = new Uint8Array(params);
    out.set(f(params.subarray(2, 2 + n)), 2);
    return out;
  }

  /**
   * The authorization for one command: a fresh caller nonce and an HMAC over cpHash (handle names + parameters as
   * sent). With encryptCommand, the first parameter's contents are encrypted and the returned params must be sent.
   */
  authorize(cc: number, handleNames: Uint8Array[], params: Uint8Array, opts: { encryptCommand?: boolean; encryptResponse?: boolean } = {}): { auth: Authorization; params: Uint8Array } {
    this.nonceCaller = new Uint8Array(randomBytes(32));
    const attributes = (opts.encryptCommand ? ATTR_DECRYPT : 0) | (opts.encryptResponse ? ATTR_ENCRYPT : 0);
    const sent = opts.encryptCommand
      ? SaltedSession.firstParam(params, (b) => this.cfb(this.nonceCaller, this.nonceTpm, false, b), "command parameter")
      : params;
    const cpHash = digest(HASH, u32(cc), ...handleNames, sent);
    const hmac = createHmac(HASHES[HASH].node, this.sessionKey)
      .update(cpHash).update(this.nonceCaller).update(this.nonceTpm).update(new Uint8Array([attributes])).digest();
    return { auth: { handle: this.handle, nonce: this.nonceCaller, attributes, hmac: new Uint8Array(hmac) }, params: sent };
  }

  /** Checks the response HMAC (rpHash over rc=0, cc and the parameters as received) and rolls the TPM nonce. */
  verify(cc: number, paramBytes: Uint8Array, auth: ResponseAuth): void {
    const rpHash = digest(HASH, u32(0), u32(cc), paramBytes);
    const expect = createHmac(HASHES[HASH].node, this.sessionKey)
      .update(rpHash).update(auth.nonce).update(this.nonceCaller).update(new Uint8Array([auth.attributes])).digest();
    if (auth.hmac.length !== expect.length || !timingSafeEqual(auth.hmac, expect)) {
      throw new TpmIntegrityError(`TPM2_${ccName(cc)}: response HMAC mismatch (reply altered on the way, or not from this TPM)`);
    }
    this.nonceTpm = auth.nonce;
  }

  /** Decrypts the first response parameter (a TPM2B); call after verify(), which rolled the TPM nonce. */
  decryptFirstParam(paramBytes: Uint8Array): Uint8Array {
    return SaltedSession.firstParam(paramBytes, (b) => this.cfb(this.nonceTpm, this.nonceCaller, true, b), "encrypted response parameter");
  }
}

/** Unseal with a salted policy session whose policy is already satisfied: verified reply, key decrypted only here. */
export async function unsealSalted(tpm: Tpm, item: number, itemName: Uint8Array, session: SaltedSession): Promise<Uint8Array> {
  const { auth, params } = session.authorize(TPM_CC.Unseal, [itemName], new Uint8Array(0), { encryptResponse: true });
  const rsp = await tpm.execute({ cc: TPM_CC.Unseal, handles: [item], auths: [auth], params, context: `object 0x${item.toString(16)}` });
  session.verify(TPM_CC.Unseal, rsp.paramBytes, rsp.auths[0]);
  const r = new Reader(session.decryptFirstParam(rsp.paramBytes), "Unseal response");
  const data = r.tpm2b("outData", 128);
  r.end("Unseal response");
  return data;
}

/** Create under `parent` with the sensitive data encrypted on the bus (salted HMAC session, decrypt attribute). */
export async function createSalted(tpm: Tpm, parent: CreatedObject, template: PublicTemplate, sensitive: { data?: Uint8Array }): Promise<{ private: Uint8Array; public: TpmPublic }> {
  const session = await SaltedSession.start(tpm, parent, TPM_SE.HMAC);
  try {
    const { auth, params } = session.authorize(TPM_CC.Create, [parent.name], createParams(template, sensitive), { encryptCommand: true });
    const rsp = await tpm.execute({ cc: TPM_CC.Create, handles: [parent.handle], auths: [auth], params });
    session.verify(TPM_CC.Create, rsp.paramBytes, rsp.auths[0]);
    return parseCreateResponse(rsp.params);
  } finally {
    await tpm.flushQuietly(session.handle);
  }
}
