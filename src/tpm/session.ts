// Authorization sessions: policy sessions (PCR policy, EK PolicySecret) started, used and always flushed.
import { randomBytes } from "node:crypto";
import { TPM_ALG, TPM_RH, TPM_SE } from "./constants";
import { type Authorization, type Tpm, policyAuth } from "./commands";
import type { PcrSelection } from "./structures";

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
