// TPM 2.0 numeric constants (TCG TPM 2.0 Library Part 2) for the commands and structures airroot uses.

export const TPM_ST = {
  RSP_COMMAND: 0x00c4,
  NULL: 0x8000,
  NO_SESSIONS: 0x8001,
  SESSIONS: 0x8002,
  CREATION: 0x8021,
  AUTH_SECRET: 0x8023,
} as const;

export const TPM_CC = {
  EvictControl: 0x120,
  NV_UndefineSpace: 0x122,
  NV_DefineSpace: 0x12a,
  CreatePrimary: 0x131,
  NV_Write: 0x137,
  Startup: 0x144,
  ActivateCredential: 0x147,
  NV_Read: 0x14e,
  PolicySecret: 0x151,
  Create: 0x153,
  Load: 0x157,
  Unseal: 0x15e,
  FlushContext: 0x165,
  MakeCredential: 0x168,
  NV_ReadPublic: 0x169,
  ReadPublic: 0x173,
  StartAuthSession: 0x176,
  GetCapability: 0x17a,
  GetRandom: 0x17b,
  PCR_Read: 0x17e,
  PolicyPCR: 0x17f,
  PCR_Extend: 0x182,
  PolicyGetDigest: 0x189,
} as const;

export const ccName = (cc: number): string =>
  Object.entries(TPM_CC).find(([, v]) => v === cc)?.[0] ?? `0x${cc.toString(16)}`;

export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  KEYEDHASH: 0x0008,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  SM3_256: 0x0012,
  RSASSA: 0x0014,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CFB: 0x0043,
} as const;

export const TPM_ECC = { NIST_P256: 0x0003, NIST_P384: 0x0004 } as const;

/** Hash algorithms we can compute in software: TPM id → node:crypto name and digest size. */
export const HASHES: Record<number, { name: string; node: string; size: number }> = {
  [TPM_ALG.SHA1]: { name: "sha1", node: "sha1", size: 20 },
  [TPM_ALG.SHA256]: { name: "sha256", node: "sha256", size: 32 },
  [TPM_ALG.SHA384]: { name: "sha384", node: "sha384", size: 48 },
  [TPM_ALG.SHA512]: { name: "sha512", node: "sha512", size: 64 },
};

export const hashByName = (name: string): number | undefined => {
  const hit = Object.entries(HASHES).find(([, h]) => h.name === name.toLowerCase());
  return hit ? Number(hit[0]) : undefined;
};

export const TPM_RH = {
  OWNER: 0x40000001,
  NULL: 0x40000007,
  PW: 0x40000009, // TPM_RS_PW: the password "session"
  LOCKOUT: 0x4000000a,
  ENDORSEMENT: 0x4000000b,
  PLATFORM: 0x4000000c,
} as const;

export const TPM_HT = { PCR: 0x00, NV_INDEX: 0x01, HMAC_SESSION: 0x02, POLICY_SESSION: 0x03, TRANSIENT: 0x80, PERSISTENT: 0x81 } as const;

export const TPM_SE = { HMAC: 0x00, POLICY: 0x01, TRIAL: 0x03 } as const;
export const TPM_SU = { CLEAR: 0x0000, STATE: 0x0001 } as const;

export const TPM_CAP = { ALGS: 0, HANDLES: 1, COMMANDS: 2, PCRS: 5, TPM_PROPERTIES: 6, ECC_CURVES: 8 } as const;

export const TPM_PT = {
  FAMILY_INDICATOR: 0x100,
  LEVEL: 0x101,
  REVISION: 0x102,
  MANUFACTURER: 0x105,
  VENDOR_STRING_1: 0x106,
  FIRMWARE_VERSION_1: 0x10b,
  FIRMWARE_VERSION_2: 0x10c,
  PCR_COUNT: 0x112,
  NV_INDEX_MAX: 0x117,
  NV_BUFFER_MAX: 0x12c,
  HR_PERSISTENT_AVAIL: 0x209,
} as const;

/** TPMA_OBJECT bits. */
export const OBJ = {
  fixedTPM: 0x2,
  stClear: 0x4,
  fixedParent: 0x10,
  sensitiveDataOrigin: 0x20,
  userWithAuth: 0x40,
  adminWithPolicy: 0x80,
  noDA: 0x400,
  restricted: 0x10000,
  decrypt: 0x20000,
  sign: 0x40000,
} as const;

/** TPMA_NV bits. */
export const NV = {
  OWNERWRITE: 1 << 1,
  AUTHWRITE: 1 << 2,
  OWNERREAD: 1 << 17,
  AUTHREAD: 1 << 18,
  NO_DA: 1 << 25,
  WRITTEN: 1 << 29,
} as const;

/** TPMA_SESSION bits. */
export const SESSION_ATTR = { continueSession: 0x01 } as const;

/** Handle ranges airroot searches for free slots in (TCG handle registry: owner persistent objects, owner NV). */
export const OWNER_PERSISTENT_FIRST = 0x81000000;
export const OWNER_PERSISTENT_LAST = 0x8100ffff;
export const OWNER_NV_FIRST = 0x01000000;
export const OWNER_NV_LAST = 0x013fffff;

/** TCG EK credential profile: NV indices holding the EK certificates. */
export const EK_CERT_NV = { RSA2048: 0x01c00002, ECC_P256: 0x01c0000a } as const;
