// Decoding of TPM 2.0 response codes into readable messages, and the error type carrying them.
import { ccName } from "./constants";

const FMT1: Record<number, [string, string]> = {
  0x01: ["ASYMMETRIC", "asymmetric algorithm not supported or not correct"],
  0x02: ["ATTRIBUTES", "inconsistent attributes"],
  0x03: ["HASH", "hash algorithm not supported or not appropriate"],
  0x04: ["VALUE", "value is out of range or is not correct for the context"],
  0x05: ["HIERARCHY", "hierarchy is not enabled or is not correct for the use"],
  0x07: ["KEY_SIZE", "key size is not supported"],
  0x08: ["MGF", "mask generation function not supported"],
  0x09: ["MODE", "mode of operation not supported"],
  0x0a: ["TYPE", "the type of the value is not appropriate for the use"],
  0x0b: ["HANDLE", "the handle is not correct for the use"],
  0x0c: ["KDF", "unsupported key derivation function or function not appropriate for use"],
  0x0d: ["RANGE", "value was out of allowed range"],
  0x0e: ["AUTH_FAIL", "the authorization HMAC check failed and DA counter incremented"],
  0x0f: ["NONCE", "invalid nonce size or nonce value mismatch"],
  0x10: ["PP", "authorization requires assertion of PP"],
  0x12: ["SCHEME", "unsupported or incompatible scheme"],
  0x15: ["SIZE", "structure is the wrong size"],
  0x16: ["SYMMETRIC", "unsupported symmetric algorithm or key size, or not appropriate for instance"],
  0x17: ["TAG", "incorrect structure tag"],
  0x18: ["SELECTOR", "union selector is incorrect"],
  0x1a: ["INSUFFICIENT", "the TPM was unable to unmarshal a value because there were not enough octets in the input buffer"],
  0x1b: ["SIGNATURE", "the signature is not valid"],
  0x1c: ["KEY", "key fields are not compatible with the selected use"],
  0x1d: ["POLICY_FAIL", "a policy check failed"],
  0x1f: ["INTEGRITY", "integrity check failed"],
  0x20: ["TICKET", "invalid ticket"],
  0x21: ["RESERVED_BITS", "reserved bits not set to zero as required"],
  0x22: ["BAD_AUTH", "authorization failure without DA implications"],
  0x23: ["EXPIRED", "the policy has expired"],
  0x24: ["POLICY_CC", "the commandCode in the policy is not the commandCode of the command"],
  0x25: ["BINDING", "public and sensitive portions of an object are not cryptographically bound"],
  0x26: ["CURVE", "curve not supported"],
  0x27: ["ECC_POINT", "point is not on the required curve"],
};

const VER1: Record<number, [string, string]> = {
  0x00: ["INITIALIZE", "TPM not initialized by TPM2_Startup or already initialized"],
  0x01: ["FAILURE", "commands not being accepted because of a TPM failure"],
  0x03: ["SEQUENCE", "improper use of a sequence handle"],
  0x0b: ["PRIVATE", "not currently used"],
  0x19: ["HMAC", "not currently used"],
  0x20: ["DISABLED", "the command is disabled"],
  0x21: ["EXCLUSIVE", "command failed because audit sequence required exclusivity"],
  0x24: ["AUTH_TYPE", "authorization handle is not correct for command"],
  0x25: ["AUTH_MISSING", "command requires an authorization session for handle and it is not present"],
  0x26: ["POLICY", "policy failure in math operation or an invalid authPolicy value"],
  0x27: ["PCR", "PCR check fail"],
  0x28: ["PCR_CHANGED", "PCR have changed since checked"],
  0x2d: ["UPGRADE", "TPM is in field upgrade mode"],
  0x2e: ["TOO_MANY_CONTEXTS", "context ID counter is at maximum"],
  0x2f: ["AUTH_UNAVAILABLE", "authValue or authPolicy is not available for selected entity"],
  0x30: ["REBOOT", "a _TPM_Init and Startup(CLEAR) is required before the TPM can resume operation"],
  0x31: ["UNBALANCED", "the protection algorithms (hash and symmetric) are not reasonably balanced"],
  0x42: ["COMMAND_SIZE", "command commandSize value is inconsistent with contents of the command buffer"],
  0x43: ["COMMAND_CODE", "command code not supported"],
  0x44: ["AUTHSIZE", "the value of authorizationSize is out of range or the number of octets in the Authorization Area is greater than required"],
  0x45: ["AUTH_CONTEXT", "use of an authorization session with a context command or another command that cannot have an authorization session"],
  0x46: ["NV_RANGE", "NV offset+size is out of range"],
  0x47: ["NV_SIZE", "requested allocation size is larger than allowed"],
  0x48: ["NV_LOCKED", "NV access locked"],
  0x49: ["NV_AUTHORIZATION", "NV access authorization fails in command actions"],
  0x4a: ["NV_UNINITIALIZED", "an NV Index is used before being initialized"],
  0x4b: ["NV_SPACE", "insufficient space for NV allocation"],
  0x4c: ["NV_DEFINED", "NV Index or persistent object already defined"],
  0x50: ["BAD_CONTEXT", "context in TPM2_ContextLoad() is not valid"],
  0x51: ["CPHASH", "cpHash value already set or not correct for use"],
  0x52: ["PARENT", "handle for parent is not a valid parent"],
  0x53: ["NEEDS_TEST", "some function needs testing"],
  0x54: ["NO_RESULT", "internal function cannot process a request due to an unspecified problem"],
  0x55: ["SENSITIVE", "the sensitive area did not unmarshal correctly after decryption"],
};

const WARN: Record<number, [string, string]> = {
  0x01: ["CONTEXT_GAP", "gap for context ID is too large"],
  0x02: ["OBJECT_MEMORY", "out of memory for object contexts (flush transient objects)"],
  0x03: ["SESSION_MEMORY", "out of memory for session contexts (flush sessions)"],
  0x04: ["MEMORY", "out of shared object/session memory or need space for internal operations"],
  0x05: ["SESSION_HANDLES", "out of session handles"],
  0x06: ["OBJECT_HANDLES", "out of object handles"],
  0x07: ["LOCALITY", "bad locality"],
  0x08: ["YIELDED", "the TPM has suspended operation on the command"],
  0x09: ["CANCELED", "the command was canceled"],
  0x0a: ["TESTING", "TPM is performing self-tests"],
  0x20: ["NV_RATE", "the TPM is rate-limiting accesses to prevent wearout of NV"],
  0x21: ["LOCKOUT", "authorizations for objects subject to DA protection are not allowed at this time because the TPM is in DA lockout mode"],
  0x22: ["RETRY", "the TPM was not able to start the command"],
  0x23: ["NV_UNAVAILABLE", "the command may require writing of NV and NV is not currently accessible"],
};

export interface DecodedRc {
  rc: number;
  name: string;          // e.g. "TPM_RC_POLICY_FAIL"
  text: string;          // the spec's description
  /** Which part of the command the error refers to, if the TPM said so. */
  where?: { kind: "handle" | "session" | "parameter"; index: number };
  warning: boolean;
}

export function decodeRc(rc: number): DecodedRc {
  rc = rc >>> 0;
  const unknown = (what: string): DecodedRc => ({ rc, name: `TPM_RC_0x${rc.toString(16)}`, text: what, warning: false });
  if (rc === 0) return { rc, name: "TPM_RC_SUCCESS", text: "success", warning: false };
  if (rc === 0x1e) return { rc, name: "TPM_RC_BAD_TAG", text: "the tag is not a TPM 2.0 tag (TPM 1.2 device?)", warning: false };
  if (rc > 0xffff) {
    // Upper layers of a TSS stack use the high bits; a raw TPM never does.
    return unknown("not a TPM response code (layer bits set)");
  }
  if (rc & 0x80) {
    // Format one: bits 0-5 error, bit 6 = parameter, bits 8-11 = index.
    const e = rc & 0x3f, n = (rc >> 8) & 0xf;
    const [nm, text] = FMT1[e] ?? [`FMT1_0x${e.toString(16)}`, "unknown format-one error"];
    let where: DecodedRc["where"];
    if (rc & 0x40) where = { kind: "parameter", index: n };
    else if (n & 0x8) where = { kind: "session", index: n & 0x7 };
    else if (n) where = { kind: "handle", index: n };
    return { rc, name: `TPM_RC_${nm}`, text, where, warning: false };
  }
  if (!(rc & 0x100)) return unknown("TPM 1.2 style or unknown response code");
  if (rc & 0x400) return { ...unknown("vendor-defined response code"), name: `TPM_RC_VENDOR_0x${rc.toString(16)}` };
  const e = rc & 0x7f;
  if (rc & 0x800) {
    if (e >= 0x10 && e <= 0x16) return { rc, name: `TPM_RC_REFERENCE_H${e - 0x10}`, text: `handle ${e - 0x10} refers to a loaded object that is not available`, warning: true };
    if (e >= 0x18 && e <= 0x1e) return { rc, name: `TPM_RC_REFERENCE_S${e - 0x18}`, text: `session ${e - 0x18} refers to a session that is not loaded`, warning: true };
    const [nm, text] = WARN[e] ?? [`WARN_0x${e.toString(16)}`, "unknown warning"];
    return { rc, name: `TPM_RC_${nm}`, text, warning: true };
  }
  const [nm, text] = VER1[e] ?? [`VER1_0x${e.toString(16)}`, "unknown error"];
  return { rc, name: `TPM_RC_${nm}`, text, warning: false };
}

export function describeRc(rc: number): string {
  const d = decodeRc(rc);
  const where = d.where ? ` (${d.where.kind} ${d.where.index})` : "";
  return `${d.name}${where}: ${d.text} [0x${rc.toString(16).padStart(3, "0")}]`;
}

/** The TPM answered a command with a non-success response code. */
export class TpmError extends Error {
  override name = "TpmError";
  readonly decoded: DecodedRc;
  constructor(readonly command: number, readonly rc: number, context?: string) {
    super(`TPM2_${ccName(command)}${context ? ` (${context})` : ""} failed: ${describeRc(rc)}`);
    this.decoded = decodeRc(rc);
  }
  /** The base code without handle/session/parameter index, to compare with e.g. RC.POLICY_FAIL. */
  get base(): number { return this.rc & 0x80 ? this.rc & 0xbf : this.rc; }
}

/** Base codes callers compare against `TpmError.base`. */
export const RC = {
  HANDLE: 0x8b,
  VALUE: 0x84,
  POLICY_FAIL: 0x9d,
  PCR_CHANGED: 0x128,
  NV_DEFINED: 0x14c,
  NV_SPACE: 0x14b,
  INITIALIZE: 0x100,
  ASYMMETRIC: 0x81,
  CURVE: 0xa6,
  RETRY: 0x922,
  TESTING: 0x90a,
  YIELDED: 0x908,
} as const;
