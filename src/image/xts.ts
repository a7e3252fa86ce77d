// AES-256-XTS as dm-crypt's "aes-xts-plain64" computes it, one encryption sector at a time.
//
// Bun's crypto (BoringSSL) has no XTS, so XTS is built here on AES-256-ECB (IEEE 1619): the tweak T = AES_K2(IV),
// each 16-byte block j is AES_K1(P_j ^ T_j) ^ T_j with T_{j+1} = T_j * x in GF(2^128). The IV is plain64's: the
// 64-bit little-endian number of the sector's first 512-byte unit, zero-padded to 16 bytes (dm-crypt counts IVs in
// 512-byte units for any sector_size unless told iv_large_sectors; the table never says so).
import { createCipheriv, createDecipheriv } from "node:crypto";

export const XTS_KEY_BYTES = 64;     // two AES-256 keys: data key, tweak key
const BLOCK = 16;

/** The plain64 IV of the encryption sector that starts at byte `offset` of the device. */
export function plain64Iv(offset: number): Buffer {
  const iv = Buffer.alloc(16);
  iv.writeBigUInt64LE(BigInt(Math.floor(offset / 512)));
  return iv;
}

function checkKey(key: Uint8Array): void {
  if (key.length !== XTS_KEY_BYTES) throw new Error(`AES-256-XTS needs a ${XTS_KEY_BYTES}-byte key, got ${key.length}`);
  // The kernel (and OpenSSL) refuse equal halves: XTS is not secure with them.
  if (Buffer.from(key.subarray(0, 32)).equals(Buffer.from(key.subarray(32)))) throw new Error("AES-256-XTS key halves are equal");
}

function ecb(encrypt: boolean, key: Uint8Array, data: Uint8Array): Buffer {
  const c = encrypt ? createCipheriv("aes-256-ecb", key, null) : createDecipheriv("aes-256-ecb", key, null);
  c.setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

/** The tweak of every 16-byte block of one sector (T_0 = AES_K2(iv), then multiplied by x per block). */
function tweaks(tweakKey: Uint8Array, iv: Uint8Array, blocks: number): Buffer {
  const t = Buffer.alloc(blocks * BLOCK);
  ecb(true, tweakKey, iv).copy(t, 0);
  for (let j = 1; j < blocks; j++) {
    const prev = (j - 1) * BLOCK, cur = j * BLOCK;
    let carry = 0;
    for (let i = 0; i < BLOCK; i++) { // little-endian shift left by one bit
      const b = t[prev + i];
      t[cur + i] = ((b << 1) | carry) & 0xff;
      carry = b >> 7;
    }
    if (carry) t[cur] ^= 0x87;
  }
  return t;
}

function xorInto(a: Buffer, b: Buffer): void {
  for (let i = 0; i < a.length; i++) a[i] ^= b[i];
}

function transform(encrypt: boolean, key: Uint8Array, sector: Uint8Array, offset: number): Buffer {
  checkKey(key);
  if (sector.length === 0 || sector.length % BLOCK !== 0) throw new Error(`an XTS sector must be a positive multiple of ${BLOCK} bytes, got ${sector.length}`);
  const t = tweaks(key.subarray(32), plain64Iv(offset), sector.length / BLOCK);
  const buf = Buffer.from(sector);
  xorInto(buf, t);
  const out = ecb(encrypt, key.subarray(0, 32), buf);
  xorInto(out, t);
  return out;
}

/** Encrypts one sector that starts at byte `offset` of the (plaintext and ciphertext) image. */
export function encryptSector(key: Uint8Array, sector: Uint8Array, offset: number): Buffer {
  return transform(true, key, sector, offset);
}

export function decryptSector(key: Uint8Array, sector: Uint8Array, offset: number): Buffer {
  return transform(false, key, sector, offset);
}

/**
 * Encrypts or decrypts a run of whole sectors starting at byte `offset` (a multiple of sectorSize): the same result
 * as transform() per sector, with two AES calls for the whole run (every sector's first tweak, then every block) and
 * the tweak arithmetic on 32-bit words.
 */
export function xtsRun(encrypt: boolean, key: Uint8Array, data: Uint8Array, offset: number, sectorSize: number): Buffer {
  checkKey(key);
  if (sectorSize % BLOCK !== 0 || data.length % sectorSize !== 0 || offset % sectorSize !== 0) {
    throw new Error(`XTS run at ${offset} of ${data.length} bytes is not in whole ${sectorSize}-byte sectors`);
  }
  const sectors = data.length / sectorSize, blocksPerSector = sectorSize / BLOCK;
  const ivs = Buffer.alloc(sectors * BLOCK);
  for (let i = 0; i < sectors; i++) plain64Iv(offset + i * sectorSize).copy(ivs, i * BLOCK);
  const first = new Uint32Array(toAligned(ecb(true, key.subarray(32), ivs)));
  const t = new Uint32Array(data.length / 4);
  for (let i = 0; i < sectors; i++) {
    let w = i * (sectorSize / 4);
    let a = first[i * 4], b = first[i * 4 + 1], c = first[i * 4 + 2], d = first[i * 4 + 3];
    for (let j = 0; j < blocksPerSector; j++, w += 4) {
      t[w] = a; t[w + 1] = b; t[w + 2] = c; t[w + 3] = d;
      // times x in GF(2^128), little-endian words: shift left one bit, fold the carry back in with 0x87
      const carry = d >>> 31;
      d = ((d << 1) | (c >>> 31)) >>> 0;
      c = ((c << 1) | (b >>> 31)) >>> 0;
      b = ((b << 1) | (a >>> 31)) >>> 0;
      a = ((a << 1) ^ (carry * 0x87)) >>> 0;
    }
  }
  const x = new Uint32Array(toAligned(data));
  for (let i = 0; i < x.length; i++) x[i] ^= t[i];
  const out = new Uint32Array(toAligned(ecb(encrypt, key.subarray(0, 32), new Uint8Array(x.buffer))));
  for (let i = 0; i < out.length; i++) out[i] ^= t[i];
  return Buffer.from(out.buffer);
}

/** A fresh, 4-byte aligned copy (Buffers may sit at any offset of a shared pool). Words are little-endian on x86-64. */
function toAligned(b: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(b.length);
  copy.set(b);
  return copy.buffer;
}
