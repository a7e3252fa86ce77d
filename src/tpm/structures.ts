// TPM 2.0 structures airroot exchanges with the TPM: PCR selections, public areas, NV public areas, names.
import { createHash } from "node:crypto";
import { HASHES, TPM_ALG, TPM_CC } from "./constants";
import { Reader, TpmFormatError, Writer, concat } from "./marshal";

/** One bank's selection: PCR indices in one hash bank. */
export interface PcrSelection { hash: number; pcrs: number[] }

const MAX_SELECT_BYTES = 32; // enough for 256 PCRs; real TPMs have 24
const MAX_BANKS = 16;

export function writePcrSelections(w: Writer, sels: PcrSelection[], sizeofSelect = 3): Writer {
  w.u32(sels.length);
  for (const s of sels) {
    const size = Math.max(sizeofSelect, ...s.pcrs.map((p) => (p >> 3) + 1));
    const bits = new Uint8Array(size);
    for (const p of s.pcrs) {
      if (!Number.isInteger(p) || p < 0 || p >= MAX_SELECT_BYTES * 8) throw new RangeError(`PCR index out of range: ${p}`);
      bits[p >> 3] |= 1 << (p & 7);
    }
    w.u16(s.hash).u8(size).bytes(bits);
  }
  return w;
}

export function readPcrSelections(r: Reader): PcrSelection[] {
  const n = r.count("TPML_PCR_SELECTION", MAX_BANKS);
  const out: PcrSelection[] = [];
  for (let i = 0; i < n; i++) {
    const hash = r.u16("TPMS_PCR_SELECTION.hash");
    const size = r.u8("sizeofSelect");
    if (size > MAX_SELECT_BYTES) throw new TpmFormatError(`PCR selection of ${size} bytes exceeds ${MAX_SELECT_BYTES}`);
    const bits = r.bytes(size, "pcrSelect");
    const pcrs: number[] = [];
    for (let p = 0; p < size * 8; p++) if (bits[p >> 3] & (1 << (p & 7))) pcrs.push(p);
    out.push({ hash, pcrs });
  }
  return out;
}

export const hashName = (alg: number): string => HASHES[alg]?.name ?? `alg0x${alg.toString(16)}`;

export function digest(alg: number, ...parts: Uint8Array[]): Uint8Array {
  const h = HASHES[alg];
  if (!h) throw new TpmFormatError(`hash algorithm 0x${alg.toString(16)} is not supported in software`);
  const c = createHash(h.node);
  for (const p of parts) c.update(p);
  return new Uint8Array(c.digest());
}

export interface SymDef { alg: number; keyBits?: number; mode?: number }
export interface Scheme { alg: number; hash?: number; extra?: number }

/** A parsed TPMT_PUBLIC; `raw` is the exact marshalled bytes, which the object's name is computed over. */
export interface TpmPublic {
  type: number;
  nameAlg: number;
  attributes: number;
  authPolicy: Uint8Array;
  symmetric?: SymDef;
  scheme?: Scheme;
  rsa?: { keyBits: number; exponent: number; n: Uint8Array };
  ecc?: { curve: number; kdf: Scheme; x: Uint8Array; y: Uint8Array };
  keyedHash?: { unique: Uint8Array };
  symcipher?: { unique: Uint8Array };
  raw: Uint8Array;
}

export type PublicTemplate = Omit<TpmPublic, "raw">;

function writeSym(w: Writer, s: SymDef | undefined): void {
  const alg = s?.alg ?? TPM_ALG.NULL;
  w.u16(alg);
  if (alg !== TPM_ALG.NULL) w.u16(s!.keyBits ?? 128).u16(s!.mode ?? TPM_ALG.CFB);
}
function readSym(r: Reader): SymDef {
  const alg = r.u16("symmetric.algorithm");
  if (alg === TPM_ALG.NULL) return { alg };
  return { alg, keyBits: r.u16("symmetric.keyBits"), mode: r.u16("symmetric.mode") };
}
function writeScheme(w: Writer, s: Scheme | undefined, xorKdf = false): void {
  const alg = s?.alg ?? TPM_ALG.NULL;
  w.u16(alg);
  if (alg === TPM_ALG.NULL) return;
  w.u16(s!.hash ?? TPM_ALG.SHA256);
  if (s!.extra !== undefined || (xorKdf && alg === 0x000a) || alg === 0x001a) w.u16(s!.extra ?? 0);
}
function readScheme(r: Reader, field: string): Scheme {
  const alg = r.u16(`${field}.scheme`);
  if (alg === TPM_ALG.NULL) return { alg };
  const hash = r.u16(`${field}.hashAlg`);
  // ECDAA carries a count, XOR a KDF: one more u16 each.
  if (alg === 0x001a || alg === 0x000a) return { alg, hash, extra: r.u16(`${field}.extra`) };
  return { alg, hash };
}

export function marshalPublic(p: PublicTemplate): Uint8Array {
  const w = new Writer();
  w.u16(p.type).u16(p.nameAlg).u32(p.attributes >>> 0).tpm2b(p.authPolicy);
  switch (p.type) {
    case TPM_ALG.RSA:
      writeSym(w, p.symmetric); writeScheme(w, p.scheme);
      w.u16(p.rsa!.keyBits).u32(p.rsa!.exponent).tpm2b(p.rsa!.n);
      break;
    case TPM_ALG.ECC:
      writeSym(w, p.symmetric); writeScheme(w, p.scheme);
      w.u16(p.ecc!.curve); writeScheme(w, p.ecc!.kdf);
      w.tpm2b(p.ecc!.x).tpm2b(p.ecc!.y);
      break;
    case TPM_ALG.KEYEDHASH:
      writeScheme(w, p.scheme, true);
      w.tpm2b(p.keyedHash?.unique ?? new Uint8Array(0));
      break;
    case TPM_ALG.SYMCIPHER:
      writeSym(w, p.symmetric);
      w.tpm2b(p.symcipher?.unique ?? new Uint8Array(0));
      break;
    default:
      throw new RangeError(`unsupported public area type 0x${p.type.toString(16)}`);
  }
  return w.finish();
}

/** Parses a TPMT_PUBLIC that fills `r` exactly. */
export function parsePublic(r: Reader): TpmPublic {
  const start = r.offset;
  const all = r.bytes(r.remaining, "TPMT_PUBLIC");
  const q = new Reader(all, "TPMT_PUBLIC");
  const type = q.u16("type"), nameAlg = q.u16("nameAlg"), attributes = q.u32("objectAttributes");
  const authPolicy = q.tpm2b("authPolicy", 64);
  const p: TpmPublic = { type, nameAlg, attributes, authPolicy, raw: all };
  switch (type) {
    case TPM_ALG.RSA: {
      p.symmetric = readSym(q); p.scheme = readScheme(q, "rsa");
      const keyBits = q.u16("keyBits"), exponent = q.u32("exponent");
      p.rsa = { keyBits, exponent, n: q.tpm2b("unique.rsa", 512) };
      break;
    }
    case TPM_ALG.ECC: {
      p.symmetric = readSym(q); p.scheme = readScheme(q, "ecc");
      const curve = q.u16("curveID"), kdf = readScheme(q, "kdf");
      p.ecc = { curve, kdf, x: q.tpm2b("unique.x", 128), y: q.tpm2b("unique.y", 128) };
      break;
    }
    case TPM_ALG.KEYEDHASH:
      p.scheme = readScheme(q, "keyedHash");
      p.keyedHash = { unique: q.tpm2b("unique", 64) };
      break;
    case TPM_ALG.SYMCIPHER:
      p.symmetric = readSym(q);
      p.symcipher = { unique: q.tpm2b("unique", 64) };
      break;
    default:
      throw new TpmFormatError(`TPMT_PUBLIC at offset ${start}: unknown object type 0x${type.toString(16)}`);
  }
  q.end("TPMT_PUBLIC");
  return p;
}

/** Parses a TPM2B_PUBLIC (u16 size + TPMT_PUBLIC), e.g. a tpm2-tools `.pub` file or a reply field. */
export function readPublic2b(r: Reader): TpmPublic {
  const size = r.u16("TPM2B_PUBLIC.size");
  if (size === 0) throw new TpmFormatError("TPM2B_PUBLIC is empty");
  return parsePublic(r.sub(size, "TPM2B_PUBLIC"));
}

export const publicFromBytes = (tpm2bPublic: Uint8Array): TpmPublic => {
  const r = new Reader(tpm2bPublic, "TPM2B_PUBLIC");
  const p = readPublic2b(r);
  r.end("TPM2B_PUBLIC");
  return p;
};

/** Name of an object: nameAlg || H_nameAlg(TPMT_PUBLIC). */
export function objectName(p: { nameAlg: number; raw: Uint8Array }): Uint8Array {
  const alg = new Writer().u16(p.nameAlg).finish();
  return concat(alg, digest(p.nameAlg, p.raw));
}

export interface NvPublic { index: number; nameAlg: number; attributes: number; authPolicy: Uint8Array; dataSize: number; raw: Uint8Array }

export function marshalNvPublic(p: Omit<NvPublic, "raw">): Uint8Array {
  return new Writer().u32(p.index).u16(p.nameAlg).u32(p.attributes >>> 0).tpm2b(p.authPolicy).u16(p.dataSize).finish();
}

export function readNvPublic2b(r: Reader): NvPublic {
  const size = r.u16("TPM2B_NV_PUBLIC.size");
  const raw = r.bytes(size, "TPMS_NV_PUBLIC");
  const q = new Reader(raw, "TPMS_NV_PUBLIC");
  const p: NvPublic = {
    index: q.u32("nvIndex"), nameAlg: q.u16("nameAlg"), attributes: q.u32("attributes"),
    authPolicy: q.tpm2b("authPolicy", 64), dataSize: q.u16("dataSize"), raw,
  };
  q.end("TPMS_NV_PUBLIC");
  return p;
}

/** Software PolicyPCR: the policy digest a trial session would report, from the expected PCR values. */
export function policyPcrDigest(sessionHash: number, sel: PcrSelection[], pcrValues: Uint8Array[], prior?: Uint8Array): Uint8Array {
  const size = HASHES[sessionHash]?.size;
  if (!size) throw new RangeError(`unsupported policy hash 0x${sessionHash.toString(16)}`);
  const pcrDigest = digest(sessionHash, ...pcrValues);
  const body = writePcrSelections(new Writer().u32(TPM_CC.PolicyPCR), sel).bytes(pcrDigest).finish();
  return digest(sessionHash, prior ?? new Uint8Array(size), body);
}
