// The node credential's life in the TPM: seal to a PCR, find and unseal next boot, lock for this boot, evict.
//
// Layout. A sealed data object holds at most 128 bytes, the credential (key + certificate) is a few KiB, and a
// diskless node has no disk to keep a file on. So:
//   - a random 32-byte key K is sealed in a keyed-hash object whose only authorization is PolicyPCR on one PCR,
//     made persistent at a free handle in the owner range (0x81000100 upwards);
//   - the credential, encrypted with AES-256-GCM under K, lives in owner NV indices (0x01300000 upwards), split
//     into pieces of at most TPM_PT_NV_INDEX_MAX bytes. The first ("head") index starts with a plain header that
//     names the object handle, PCR, bank and the other indices; the header is the GCM additional data, so
//     tampering with it fails decryption. The ciphertext is readable by anyone with owner auth; it is useless
//     without K, and K is released only while the PCR holds its fresh-boot value.
// K travels to and from the TPM only over sessions salted to the storage key (parameter encryption, reply HMACs).
// Locking extends the PCR with a fixed airroot event, so nothing later in this boot can unseal K.
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { HASHES, NV, OWNER_NV_FIRST, OWNER_NV_LAST, OWNER_PERSISTENT_LAST, TPM_ALG, TPM_PT, TPM_RH } from "./constants";
import type { CreatedObject, Tpm } from "./commands";
import { Reader, TpmFormatError, Writer, concat } from "./marshal";
import { RC, TpmError } from "./rc";
import { SaltedSession, createSalted, pcrPolicyAuth, unsealSalted, withPolicySession } from "./session";
import { type PcrSelection, digest, hashName, policyPcrDigest } from "./structures";
import { type KeyAlg, SEALED_ATTRS, sealedTemplate, srkTemplate } from "./templates";

export const PERSISTENT_BASE = 0x81000100;
export const NV_BASE = 0x01300000;
const MAGIC = new TextEncoder().encode("airroot-cred-v1\0");
const NV_ATTRS = NV.OWNERWRITE | NV.OWNERREAD | NV.NO_DA;
const KEY_LEN = 32, IV_LEN = 12, TAG_LEN = 16;
/** The event extended into the PCR by lockCredential (hashed with each bank's algorithm). */
export const LOCK_EVENT = new TextEncoder().encode("airroot: node credential locked for this boot");
/** Bank preference when none is given: strongest first. */
const BANK_PREFERENCE = [TPM_ALG.SHA512, TPM_ALG.SHA384, TPM_ALG.SHA256, TPM_ALG.SHA1];
const MAX_CREDENTIAL = 16 * 1024;

/** absent: enroll. locked: wait for the next boot. changed: PCRs differ from seal time (new kernel?): re-enroll.
 *  corrupt: evict and re-enroll. unsupported: bad options or a TPM without what we need. */
export type CredentialErrorKind = "absent" | "locked" | "changed" | "corrupt" | "unsupported";

/** The credential cannot be sealed, found or unsealed; `kind` tells the caller what to do (re-enroll, reboot...). */
export class CredentialError extends Error {
  override name = "CredentialError";
  constructor(readonly kind: CredentialErrorKind, message: string) { super(message); }
}

export interface CredentialOptions {
  /** PCR the credential is sealed to and locked by (default 15: unused by firmware and boot loaders). */
  pcr?: number;
  /** PCR bank (TPM_ALG_*); default: the strongest allocated bank that has the PCR. */
  bank?: number;
  /**
   * Further PCRs (at most 7) whose current values the credential is also bound to, e.g. [4, 7, 9] for the
   * kernel/initramfs and Secure Boot measurements. Without them, PCR 15 is zero on every fresh boot, so any
   * image booted on this node (a hostile PXE server's, say) could unseal; with them, a kernel or initramfs
   * update needs a re-enrollment. Default: none.
   */
  bindPcrs?: number[];
  /**
   * Seal and unseal over sessions salted to the storage key (default true), so K crosses the TPM bus encrypted
   * and replies are authenticated. false only for tests that replay recorded replies (fresh nonces defeat replay).
   */
  saltedSession?: boolean;
  /** Owner hierarchy password (default empty, as on nearly every node). */
  ownerAuth?: Uint8Array;
  /** Storage key algorithm: "ecc" (default, falls back to RSA on TPMs without ECC P-256) or "rsa". */
  srkAlg?: KeyAlg;
}

/** Where a sealed credential lives; read from the head NV index without unsealing anything. */
export interface SealedCredentialInfo {
  objectHandle: number;
  pcr: number;
  bank: number;
  boundPcrs: number[];   // extra PCRs bound at seal time (bindPcrs)
  nvIndices: number[];   // head first
  length: number;        // plaintext bytes
}

const ownerAuthOf = (o: CredentialOptions) => o.ownerAuth;

/** The bank to seal to: the requested one if allocated with this PCR, else the strongest allocated one. */
export async function chooseBank(tpm: Tpm, pcr: number, bank?: number): Promise<number> {
  const banks = (await tpm.getPcrBanks()).filter((b) => b.pcrs.includes(pcr) && HASHES[b.hash]);
  if (bank !== undefined) {
    if (!banks.some((b) => b.hash === bank)) {
      throw new CredentialError("unsupported", `PCR bank ${hashName(bank)} with PCR ${pcr} is not allocated on this TPM (have: ${banks.map((b) => hashName(b.hash)).join(", ") || "none"})`);
    }
    return bank;
  }
  const best = BANK_PREFERENCE.find((h) => banks.some((b) => b.hash === h));
  if (best === undefined) throw new CredentialError("unsupported", `no allocated PCR bank has PCR ${pcr}`);
  return best;
}

/** The PCR value after lockCredential on a fresh boot (PCR starting at zero): lets us tell "locked" from "changed". */
export function lockedPcrValue(bank: number): Uint8Array {
  const size = HASHES[bank].size;
  return digest(bank, new Uint8Array(size), digest(bank, LOCK_EVENT));
}

/** First free handle at or above `from` in `[from, last]`, given the handles in use. */
export function firstFree(used: number[], from: number, last: number, count = 1): number[] {
  const taken = new Set(used);
  const out: number[] = [];
  for (let h = from; h <= last && out.length < count; h++) if (!taken.has(h)) out.push(h);
  if (out.length < count) throw new CredentialError("unsupported", `no free handle in 0x${from.toString(16)}..0x${last.toString(16)}`);
  return out;
}

/** One bank's selection: the lock PCR plus the bound ones, ascending (the order PolicyPCR hashes them in). */
const selectionOf = (bank: number, pcr: number, bound: number[]): PcrSelection[] =>
  [{ hash: bank, pcrs: [pcr, ...bound].sort((a, b) => a - b) }];

/** Current values of a one-bank selection, in selection order; one PCR per read keeps replies simple to check. */
async function readSelected(tpm: Tpm, sel: PcrSelection[]): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const p of sel[0].pcrs) {
    const { values } = await tpm.pcrRead([{ hash: sel[0].hash, pcrs: [p] }]);
    if (values.length !== 1 || values[0].length !== HASHES[sel[0].hash].size) throw new TpmFormatError(`PCR_Read of PCR ${p} returned ${values.length} values`);
    out.push(values[0]);
  }
  return out;
}

async function nvLimits(tpm: Tpm): Promise<{ indexMax: number; bufferMax: number }> {
  const p = await tpm.getProperties(TPM_PT.NV_INDEX_MAX, 1);
  const q = await tpm.getProperties(TPM_PT.NV_BUFFER_MAX, 1);
  // Clamp to sane values: a TPM reporting 0 or nonsense must not make us loop on 1-byte writes.
  const indexMax = Math.min(Math.max(p.get(TPM_PT.NV_INDEX_MAX) ?? 1024, 256), 4096);
  const bufferMax = Math.min(Math.max(q.get(TPM_PT.NV_BUFFER_MAX) ?? 512, 64), 2048);
  return { indexMax, bufferMax };
}

function encodeHeader(h: Omit<SealedCredentialInfo, "nvIndices"> & { extra: number[]; iv: Uint8Array }): Uint8Array {
  const bitmap = h.boundPcrs.reduce((m, p) => (m | (1 << p)) >>> 0, 0);
  const w = new Writer().bytes(MAGIC).u32(h.objectHandle).u8(h.pcr).u16(h.bank).u32(bitmap).u8(h.extra.length);
  for (const i of h.extra) w.u32(i);
  return w.u32(h.length).bytes(h.iv).finish();
}

function decodeHeader(head: number, r: Reader): SealedCredentialInfo & { iv: Uint8Array; headerLen: number } {
  const magic = r.bytes(MAGIC.length, "magic");
  if (!Buffer.from(magic).equals(Buffer.from(MAGIC))) throw new TpmFormatError("not an airroot credential header");
  const objectHandle = r.u32("objectHandle"), pcr = r.u8("pcr"), bank = r.u16("bank"), bitmap = r.u32("boundPcrs"), n = r.u8("extraCount");
  const boundPcrs = [...Array(24).keys()].filter((p) => bitmap & (1 << p));
  if (pcr > 23 || bitmap >>> 24 || boundPcrs.includes(pcr) || boundPcrs.length > 7) throw new TpmFormatError("bad PCR fields in credential header");
  const extra: number[] = [];
  for (let i = 0; i < n; i++) extra.push(r.u32("extraIndex"));
  const length = r.u32("length");
  const iv = r.bytes(IV_LEN, "iv");
  if (length > MAX_CREDENTIAL) throw new TpmFormatError(`credential length ${length} exceeds ${MAX_CREDENTIAL}`);
  if (!HASHES[bank]) throw new TpmFormatError(`unknown PCR bank 0x${bank.toString(16)} in credential header`);
  return { objectHandle, pcr, bank, boundPcrs, nvIndices: [head, ...extra], length, iv, headerLen: r.offset };
}

/** Reads the header of an owner NV index if it is an airroot credential head, else undefined. */
async function readHead(tpm: Tpm, index: number, o: CredentialOptions) {
  const { public: pub } = await tpm.nvReadPublic(index);
  if ((pub.attributes & ~NV.WRITTEN) !== NV_ATTRS || !(pub.attributes & NV.WRITTEN) || pub.dataSize < MAGIC.length + 32) return undefined;
  const start = await tpm.nvRead(TPM_RH.OWNER, index, MAGIC.length, 0, 512, ownerAuthOf(o));
  if (!Buffer.from(start).equals(Buffer.from(MAGIC))) return undefined;
  const { bufferMax } = await nvLimits(tpm);
  const whole = await tpm.nvRead(TPM_RH.OWNER, index, pub.dataSize, 0, bufferMax, ownerAuthOf(o));
  try {
    return { info: decodeHeader(index, new Reader(whole, `NV 0x${index.toString(16)}`)), whole };
  } catch (e) {
    if (e instanceof TpmFormatError) throw new CredentialError("corrupt", `airroot credential header in NV 0x${index.toString(16)} is damaged (${e.message}); run \`airroot tpm evict\` and re-enroll`);
    throw e;
  }
}

/** All airroot credential heads on this TPM (normally zero or one). */
export async function listCredentials(tpm: Tpm, o: CredentialOptions = {}): Promise<SealedCredentialInfo[]> {
  const out: SealedCredentialInfo[] = [];
  for (const index of await tpm.getHandles(OWNER_NV_FIRST, OWNER_NV_LAST)) {
    const h = await readHead(tpm, index, o);
    if (h) { const { iv: _iv, headerLen: _l, ...info } = h.info; out.push(info); }
  }
  return out;
}

export async function findCredential(tpm: Tpm, o: CredentialOptions = {}): Promise<SealedCredentialInfo | undefined> {
  return (await listCredentials(tpm, o))[0];
}

/** Creates a storage primary (ECC P-256, falling back to RSA 2048 on TPMs without ECC) and runs fn with it. */
async function withSrk<T>(tpm: Tpm, o: CredentialOptions, fn: (srk: CreatedObject) => Promise<T>): Promise<T> {
  let srk: CreatedObject | undefined;
  for (const alg of (o.srkAlg === "rsa" ? ["rsa"] : ["ecc", "rsa"]) as KeyAlg[]) {
    try {
      srk = await tpm.createPrimary(TPM_RH.OWNER, srkTemplate(alg), ownerAuthOf(o));
      break;
    } catch (e) {
      if (alg === "ecc" && e instanceof TpmError && [RC.ASYMMETRIC, RC.CURVE, RC.VALUE].includes(e.base as never)) continue;
      throw e;
    }
  }
  try { return await fn(srk!); } finally { await tpm.flushQuietly(srk?.handle); }
}

/**
 * Seals `credential` (up to 16 KiB) to the current value of one PCR and persists it in this TPM. Any airroot
 * credential already present is replaced once the new one is fully written.
 */
export async function sealCredential(tpm: Tpm, credential: Uint8Array, o: CredentialOptions = {}): Promise<SealedCredentialInfo> {
  const pcr = o.pcr ?? 15;
  if (!Number.isInteger(pcr) || pcr < 0 || pcr > 23) throw new CredentialError("unsupported", `PCR ${pcr} is out of range 0..23`);
  if (credential.length === 0 || credential.length > MAX_CREDENTIAL) throw new CredentialError("unsupported", `credential size ${credential.length} not in 1..${MAX_CREDENTIAL} bytes`);
  const boundPcrs = [...new Set(o.bindPcrs ?? [])].sort((a, b) => a - b);
  if (boundPcrs.length > 7 || boundPcrs.some((p) => !Number.isInteger(p) || p < 0 || p > 23 || p === pcr)) {
    throw new CredentialError("unsupported", `bindPcrs [${boundPcrs.join(",")}]: at most 7 PCRs in 0..23, not including PCR ${pcr}`);
  }
  const bank = await chooseBank(tpm, pcr, o.bank);
  const sel = selectionOf(bank, pcr, boundPcrs);
  const values = await readSelected(tpm, sel);
  if (Buffer.from(values[sel[0].pcrs.indexOf(pcr)]).equals(Buffer.from(lockedPcrValue(bank)))) {
    throw new CredentialError("locked", `PCR ${pcr} (${hashName(bank)}) is already locked for this boot; seal before \`airroot tpm lock\`, or reboot`);
  }
  const previous = await listCredentials(tpm, o);

  // K comes from node:crypto mixed with the TPM's RNG: either source alone suffices.
  const tpmRandom = await tpm.getRandom(KEY_LEN);
  const key = new Uint8Array(randomBytes(KEY_LEN)).map((b, i) => b ^ tpmRandom[i]);
  const iv = new Uint8Array(randomBytes(IV_LEN));
  const policy = policyPcrDigest(TPM_ALG.SHA256, sel, values);

  const { indexMax, bufferMax } = await nvLimits(tpm);
  const persistentUsed = await tpm.getHandles(0x81000000, OWNER_PERSISTENT_LAST);
  const [objectHandle] = firstFree(persistentUsed, PERSISTENT_BASE, OWNER_PERSISTENT_LAST);
  // Header size depends on how many extra indices there are; a few rounds settle it.
  const base = MAGIC.length + 4 + 1 + 2 + 4 + 1 + 4 + IV_LEN;
  let pieces = 1;
  for (let i = 0; i < 8; i++) pieces = Math.ceil((base + 4 * (pieces - 1) + credential.length + TAG_LEN) / indexMax);
  if (pieces > 32) throw new CredentialError("unsupported", `credential of ${credential.length} bytes needs ${pieces} NV indices; too many`);
  const nvUsed = await tpm.getHandles(OWNER_NV_FIRST, OWNER_NV_LAST);
  const indices = firstFree(nvUsed, NV_BASE, OWNER_NV_LAST, pieces);

  const header = encodeHeader({ objectHandle, pcr, bank, boundPcrs, length: credential.length, extra: indices.slice(1), iv });
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  cipher.setAAD(header);
  const blob = concat(header, cipher.update(credential), cipher.final(), cipher.getAuthTag());

  const defined: number[] = [];
  let persisted = false;
  try {
    await withSrk(tpm, o, async (srk) => {
      // K crosses the bus encrypted (salted session, command parameter encryption).
      const created = o.saltedSession === false
        ? await tpm.create(srk.handle, sealedTemplate(policy), { data: key })
        : await createSalted(tpm, srk, sealedTemplate(policy), { data: key });
      const loaded = await tpm.load(srk.handle, created.private, created.public);
      try {
        await tpm.evictControl(loaded.handle, objectHandle, ownerAuthOf(o));
        persisted = true;
      } finally { await tpm.flushQuietly(loaded.handle); }
    });
    // Extra pieces first, head last: a head only exists once everything it names is written.
    const order = [...indices.keys()].reverse();
    for (const i of order) {
      const piece = blob.subarray(i * indexMax, Math.min(blob.length, (i + 1) * indexMax));
      await tpm.nvDefineSpace({ index: indices[i], nameAlg: TPM_ALG.SHA256, attributes: NV_ATTRS, authPolicy: new Uint8Array(0), dataSize: piece.length }, ownerAuthOf(o));
      defined.push(indices[i]);
      await tpm.nvWrite(TPM_RH.OWNER, indices[i], piece, 0, bufferMax, ownerAuthOf(o));
    }
  } catch (e) {
    for (const i of defined) await tpm.nvUndefineSpace(i, ownerAuthOf(o)).catch(() => undefined);
    if (persisted) await tpm.evictControl(objectHandle, objectHandle, ownerAuthOf(o)).catch(() => undefined);
    throw e;
  } finally {
    key.fill(0);
  }
  for (const old of previous) await removeCredential(tpm, old, o);
  return { objectHandle, pcr, bank, boundPcrs, nvIndices: indices, length: credential.length };
}

/** Unseals K through PolicyPCR; by default over a session salted to the storage key (K encrypted on the bus). */
async function unsealKey(tpm: Tpm, object: number, sel: PcrSelection[], o: CredentialOptions): Promise<Uint8Array> {
  if (o.saltedSession === false) {
    return await withPolicySession(tpm, async (s) => tpm.unseal(object, await pcrPolicyAuth(tpm, s, sel)));
  }
  const { name } = await tpm.readPublic(object);
  return await withSrk(tpm, o, async (srk) => {
    const session = await SaltedSession.start(tpm, srk);
    try {
      await tpm.policyPcr(session.handle, sel);
      return await unsealSalted(tpm, object, name, session);
    } finally { await tpm.flushQuietly(session.handle); }
  });
}

/**
 * Finds and unseals the credential. Throws CredentialError: "absent" (nothing sealed: enroll), "locked" (PCR
 * already extended this boot: reboot), "changed" (PCR values differ: re-enroll), "corrupt" (evict, re-enroll).
 */
export async function unsealCredential(tpm: Tpm, o: CredentialOptions = {}): Promise<Uint8Array> {
  const heads: { info: ReturnType<typeof decodeHeader>; whole: Uint8Array }[] = [];
  for (const index of await tpm.getHandles(OWNER_NV_FIRST, OWNER_NV_LAST)) {
    const h = await readHead(tpm, index, o);
    if (h) { heads.push(h); break; }
  }
  if (!heads.length) throw new CredentialError("absent", "no sealed airroot credential in this TPM (first boot, TPM cleared or evicted): enroll this node");
  const { info, whole } = heads[0];
  const sel = selectionOf(info.bank, info.pcr, info.boundPcrs);

  let key: Uint8Array;
  try {
    key = await unsealKey(tpm, info.objectHandle, sel, o);
  } catch (e) {
    if (e instanceof TpmError && e.base === RC.POLICY_FAIL) {
      const { values } = await tpm.pcrRead([{ hash: info.bank, pcrs: [info.pcr] }]);
      const locked = values.length === 1 && Buffer.from(values[0]).equals(Buffer.from(lockedPcrValue(info.bank)));
      const which = info.boundPcrs.length ? `PCR ${info.pcr} or bound PCRs ${info.boundPcrs.join(",")}` : `PCR ${info.pcr}`;
      throw new CredentialError(locked ? "locked" : "changed", locked
        ? `the sealed credential is locked for this boot: PCR ${info.pcr} (${hashName(info.bank)}) was extended by \`airroot tpm lock\`; it unseals again after a reboot`
        : `the sealed credential cannot be unsealed: ${which} (${hashName(info.bank)}) do not hold the values sealed to (another kernel/initramfs, or extended by something else this boot); reboot, or evict and re-enroll`);
    }
    if (e instanceof TpmError && e.base === RC.HANDLE) {
      throw new CredentialError("corrupt", `the credential header in NV 0x${info.nvIndices[0].toString(16)} names object 0x${info.objectHandle.toString(16)}, which is not in the TPM; run \`airroot tpm evict\` and re-enroll`);
    }
    throw e;
  }
  try {
    if (key.length !== KEY_LEN) throw new CredentialError("corrupt", `sealed object 0x${info.objectHandle.toString(16)} holds ${key.length} bytes, expected ${KEY_LEN}: not an airroot credential key`);
    const { bufferMax } = await nvLimits(tpm);
    const parts = [whole];
    for (const index of info.nvIndices.slice(1)) {
      const { public: pub } = await tpm.nvReadPublic(index).catch((e) => {
        throw new CredentialError("corrupt", `credential piece NV 0x${index.toString(16)} is missing (${(e as Error).message}); run \`airroot tpm evict\` and re-enroll`);
      });
      parts.push(await tpm.nvRead(TPM_RH.OWNER, index, pub.dataSize, 0, bufferMax, ownerAuthOf(o)));
    }
    const blob = concat(...parts);
    const header = blob.subarray(0, info.headerLen);
    const body = blob.subarray(info.headerLen);
    if (body.length !== info.length + TAG_LEN) {
      throw new CredentialError("corrupt", `credential ciphertext is ${body.length} bytes, header says ${info.length + TAG_LEN}; run \`airroot tpm evict\` and re-enroll`);
    }
    try {
      const d = createDecipheriv("aes-256-gcm", key, info.iv);
      d.setAAD(header);
      d.setAuthTag(body.subarray(info.length));
      return new Uint8Array(Buffer.concat([d.update(body.subarray(0, info.length)), d.final()]));
    } catch {
      throw new CredentialError("corrupt", "the sealed credential failed its integrity check (NV contents altered or mismatched key); run `airroot tpm evict` and re-enroll");
    }
  } finally {
    key.fill(0);
  }
}

/** Extends the PCR (every allocated bank) with the airroot lock event: nothing later in this boot can unseal. */
export async function lockCredential(tpm: Tpm, o: CredentialOptions = {}): Promise<number[]> {
  const pcr = o.pcr ?? 15;
  const banks = (await tpm.getPcrBanks()).filter((b) => b.pcrs.includes(pcr) && HASHES[b.hash]).map((b) => b.hash);
  if (!banks.length) throw new CredentialError("unsupported", `no allocated PCR bank has PCR ${pcr}`);
  await tpm.pcrExtend(pcr, banks.map((hash) => ({ hash, digest: digest(hash, LOCK_EVENT) })));
  return banks;
}

async function removeCredential(tpm: Tpm, info: SealedCredentialInfo, o: CredentialOptions): Promise<void> {
  const ignoreMissing = (e: unknown) => {
    if (e instanceof TpmError && e.base === RC.HANDLE) return;
    throw e;
  };
  // Head first: once it is gone, nothing refers to the rest.
  for (const i of info.nvIndices) await tpm.nvUndefineSpace(i, ownerAuthOf(o)).catch(ignoreMissing);
  await tpm.evictControl(info.objectHandle, info.objectHandle, ownerAuthOf(o)).catch(ignoreMissing);
}

/** Removes every airroot credential (sealed object and NV indices). Returns how many were removed. */
export async function evictCredential(tpm: Tpm, o: CredentialOptions = {}): Promise<number> {
  const all = await listCredentials(tpm, o);
  for (const info of all) await removeCredential(tpm, info, o);
  return all.length;
}
