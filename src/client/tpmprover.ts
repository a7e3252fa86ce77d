// The TPM side of enrollment for the client: read the EK/AK identity and answer the server's challenge with
// ActivateCredential, opening the TPM only for each step (a TPM simulator takes one client at a time).
import { openTpm } from "../tpm/tpm.ts";
import { activateCredential, identityToWire, readIdentity, type AttestOptions } from "../tpm/attest.ts";
import type { TpmProver } from "./api.ts";

export async function tpmProver(spec: string, o: AttestOptions = {}): Promise<TpmProver> {
  const withTpm = async <T>(fn: (t: Awaited<ReturnType<typeof openTpm>>) => Promise<T>): Promise<T> => {
    const t = await openTpm(spec, { timeoutMs: 30_000 });
    try { return await fn(t); } finally { await t.close(); }
  };
  const identity = identityToWire(await withTpm((t) => readIdentity(t, o)));
  return { identity, activate: (blob, secret) => withTpm((t) => activateCredential(t, blob, secret, o)) };
}
