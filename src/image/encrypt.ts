// Encrypted images: the squashfs, padded to whole sectors, encrypted as dm-crypt reads it (plain dm-crypt, no header:
// the parameters are in the signed manifest and the key comes from the server over mutual TLS, never from the image).
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { createHmac, randomBytes } from "node:crypto";
import { XTS_KEY_BYTES, xtsRun } from "./xts";

/** What the signed manifest records about an encrypted image (the key itself is never in it). */
export interface ImageEncryption {
  cipher: "aes-xts-plain64";   // dm-crypt's name: AES-XTS, IV = 512-byte sector number (plain64)
  keySize: number;             // bytes: 64 (AES-256-XTS)
  sectorSize: number;          // dm-crypt sector_size: the encryption unit
  plainSize: number;           // the squashfs's own size before padding to whole sectors
  keyCheck: string;            // HMAC-SHA256(key, KEY_CHECK_LABEL), hex: tells a wrong key from a damaged image
}

export const IMAGE_CIPHER = "aes-xts-plain64";
export const IMAGE_KEY_BYTES = XTS_KEY_BYTES;
export const IMAGE_SECTOR_SIZE = 4096;
const KEY_CHECK_LABEL = "airroot image key check v1";

export function newImageKey(): Buffer {
  for (;;) {
    const k = randomBytes(IMAGE_KEY_BYTES);
    if (!k.subarray(0, 32).equals(k.subarray(32))) return k; // XTS refuses equal halves (never happens in practice)
  }
}

export function keyCheck(key: Uint8Array): string {
  return createHmac("sha256", key).update(KEY_CHECK_LABEL).digest("hex");
}

/**
 * Writes `src` encrypted to `dst` (created, mode 0644: ciphertext is what mirrors serve), zero-padded to whole
 * sectors; streams in 1 MiB runs. Returns what the manifest records.
 */
export function encryptImageFile(src: string, dst: string, key: Uint8Array, sectorSize = IMAGE_SECTOR_SIZE): ImageEncryption {
  const RUN = 256 * sectorSize;
  const buf = Buffer.alloc(RUN);
  const inFd = openSync(src, "r");
  let outFd = -1;
  let plainSize = 0;
  try {
    outFd = openSync(dst, "wx", 0o644);
    for (let offset = 0; ; offset += RUN) {
      let n = 0;
      while (n < RUN) {
        const r = readSync(inFd, buf, n, RUN - n, null);
        if (r === 0) break;
        n += r;
      }
      if (n === 0) break;
      plainSize += n;
      const whole = Math.ceil(n / sectorSize) * sectorSize;
      buf.fill(0, n, whole); // the padding: squashfs ignores bytes past its own size
      writeSync(outFd, xtsRun(true, key, buf.subarray(0, whole), offset, sectorSize));
      if (n < RUN) break;
    }
  } finally {
    closeSync(inFd);
    if (outFd >= 0) closeSync(outFd);
  }
  if (plainSize === 0) throw new Error(`image pack: encrypting ${src}: it is empty; mksquashfs produced nothing`);
  return { cipher: IMAGE_CIPHER, keySize: key.length, sectorSize, plainSize, keyCheck: keyCheck(key) };
}

/** Decrypts bytes of an encrypted image read at `offset` (whole sectors): tests and `image verify` style checks. */
export function decryptImageBytes(key: Uint8Array, data: Uint8Array, offset: number, sectorSize = IMAGE_SECTOR_SIZE): Buffer {
  return xtsRun(false, key, data, offset, sectorSize);
}
