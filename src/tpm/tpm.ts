// The TPM facade airroot code imports: open a TPM from a --tpm spec, describe it, and the credential/attestation API.
import { TPM_PT } from "./constants";
import { Tpm } from "./commands";
import { hashName } from "./structures";
import { TpmTransportError, type TransportOptions, openTransport } from "./transport";

export { Tpm } from "./commands";
export { TpmFormatError } from "./marshal";
export { TpmError, decodeRc, describeRc } from "./rc";
export { TpmTransportError, parseTpmSpec } from "./transport";
export type { TransportOptions } from "./transport";
export { TpmIntegrityError } from "./session";
export {
  CredentialError, type CredentialErrorKind, type CredentialOptions, type SealedCredentialInfo,
  evictCredential, findCredential, listCredentials, lockCredential, sealCredential, unsealCredential,
} from "./credential";
export { type AttestOptions, type Identity, type WireIdentity, activateCredential, identityToWire, readEkCertificate, readIdentity } from "./attest";
export { type EnrollmentChallenge, type MadeCredential, challengeFromWire, makeCredential, makeEnrollmentChallenge } from "./makecredential";
export { objectName, publicFromBytes, type TpmPublic } from "./structures";

/** Default --tpm value: the kernel resource manager, falling back to the raw device. */
export const DEFAULT_TPM_SPEC = "device";

/**
 * Opens the TPM named by `spec` (device, device:/dev/tpmrm0, swtpm:HOST:PORT) and makes sure it is started.
 * Throws TpmTransportError with a "no TPM" message when there is none.
 */
export async function openTpm(spec: string = DEFAULT_TPM_SPEC, opts: TransportOptions = {}): Promise<Tpm> {
  const tpm = new Tpm(await openTransport(spec, opts));
  try {
    await tpm.startup(); // firmware or swtpm normally did this already: "already" is fine
    return tpm;
  } catch (e) {
    await tpm.close();
    throw e;
  }
}

export interface NoTpmPolicy {
  /** "refuse" (default): no TPM is an error. "warn": log a loud warning and go on without one. */
  noTpm?: "refuse" | "warn";
  log?: (line: string) => void;
}

/**
 * Opens the TPM, or, when there is none and the policy allows it, warns loudly and returns undefined so the
 * caller can enroll without TPM protection. Other failures (a TPM that answers garbage) are always errors.
 */
export async function openTpmOrWarn(spec: string, policy: NoTpmPolicy = {}, opts: TransportOptions = {}): Promise<Tpm | undefined> {
  try {
    return await openTpm(spec, opts);
  } catch (e) {
    if (!(e instanceof TpmTransportError) || !/^no TPM/.test(e.message) || (policy.noTpm ?? "refuse") === "refuse") throw e;
    const log = policy.log ?? ((l: string) => console.error(l));
    log("WARNING: " + "=".repeat(70));
    log(`WARNING: ${e.message}`);
    log("WARNING: continuing WITHOUT a TPM: the node credential will not be sealed and must be re-enrolled every boot,");
    log("WARNING: and nothing stops software started later in this boot from reading it.");
    log("WARNING: " + "=".repeat(70));
    return undefined;
  }
}

/** Runs fn with an open TPM and always closes it. */
export async function withTpm<T>(spec: string, fn: (tpm: Tpm) => Promise<T>, opts: TransportOptions = {}): Promise<T> {
  const tpm = await openTpm(spec, opts);
  try { return await fn(tpm); } finally { await tpm.close(); }
}

export interface TpmInfo {
  transport: string;
  manufacturer: string;
  vendor: string;
  firmware: string;
  specRevision: string;
  pcrBanks: { hash: string; pcrs: number }[];
  persistentHandles: number[];
  nvIndices: number[];
}

const fourcc = (v: number) => String.fromCharCode(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff).replace(/[^\x20-\x7e]/g, "");

export async function tpmInfo(tpm: Tpm): Promise<TpmInfo> {
  const p = await tpm.getProperties(TPM_PT.FAMILY_INDICATOR, 0x20);
  const get = (k: number) => p.get(k) ?? 0;
  const fw1 = get(TPM_PT.FIRMWARE_VERSION_1), fw2 = get(TPM_PT.FIRMWARE_VERSION_2);
  return {
    transport: tpm.transport.description,
    manufacturer: fourcc(get(TPM_PT.MANUFACTURER)),
    vendor: [0, 1, 2, 3].map((i) => fourcc(get(TPM_PT.VENDOR_STRING_1 + i))).join("").trim(),
    firmware: `${fw1 >>> 16}.${fw1 & 0xffff}.${fw2 >>> 16}.${fw2 & 0xffff}`,
    specRevision: `${fourcc(get(TPM_PT.FAMILY_INDICATOR))} rev ${(get(TPM_PT.REVISION) / 100).toFixed(2)}`,
    pcrBanks: (await tpm.getPcrBanks()).filter((b) => b.pcrs.length).map((b) => ({ hash: hashName(b.hash), pcrs: b.pcrs.length })),
    persistentHandles: await tpm.getHandles(0x81000000),
    nvIndices: await tpm.getHandles(0x01000000),
  };
}
