// An encrypted root image: dm-crypt between the loop device and squashfs (/dev/mapper/airroot-root, read-only).
//
// Plain dm-crypt, no LUKS header: the parameters come from the signed manifest and the key from the server's
// mutual-TLS config. The key reaches the kernel as a "logon" key in this thread's keyring (userspace can never read a
// logon key back), the table names it (":64:logon:airroot:root") instead of carrying it in hex, so `dmsetup table
// --showkeys` in the booted system shows only that name; once the table is live the key is invalidated: dm-crypt
// keeps its own copy in the kernel and nothing in any keyring, file or later process holds it.
import { existsSync, mkdirSync, readFileSync, readlinkSync, symlinkSync, unlinkSync } from "node:fs";
import { basename, join } from "node:path";
import { coldplug, type ColdplugOptions, type ColdplugResult } from "./drivers";
import { keyCheck, type ImageEncryption } from "../image/encrypt";
import { createDmDevice, removeDmDevice, type DmTarget } from "../sys/dm";
import { addLogonKey, dropKey } from "../sys/keyring";
import { FinalError } from "./sequence";
import type { Manifest } from "../image/manifest";
import type { ImageKeyGrant } from "../server/selfapi";
import type { RootCrypt } from "./rootfs";

export const CRYPT_ROOT_NAME = "airroot-root";
const KEY_DESCRIPTION = "airroot:root";

/**
 * What dm-crypt needs that the Debian kernel has as modules (trixie 6.12: dm_mod, dm_crypt, xts, aesni_intel; AES
 * and ECB built in; bookworm 6.1 also ecb): loaded here because the crypto API would otherwise ask a modprobe for
 * "xts(aes)". Built-in or absent ones are skipped (aesni_intel fails without AES-NI: the generic AES serves); only
 * dm_mod and dm_crypt are required.
 */
export const CRYPT_MODULES = ["dm_mod", "dm_crypt", "xts", "ecb", "aesni_intel"];
const REQUIRED = ["dm_mod", "dm_crypt"];

/** Loads CRYPT_MODULES (with their dependencies) once an encrypted image is to be opened. */
export async function loadCryptModules(o: Pick<ColdplugOptions, "modulesDir" | "procModules" | "load" | "log"> = {}): Promise<ColdplugResult> {
  // No modalias scan (sysDir without devices/): the drivers step did that; only these names, in modules.dep order.
  const r = await coldplug({ ...o, always: CRYPT_MODULES, sysDir: "/nonexistent", maxPasses: 1 });
  const missing = r.missing.filter((m) => REQUIRED.includes(m));
  if (missing.length) throw new FinalError(`the root image is encrypted, but the kernel modules ${missing.join(", ")} are neither built in nor in the initramfs: rebuild it (initramfs/build.ts DEFAULT_MODULES has them)`);
  const failed = r.failed.filter((f) => REQUIRED.includes(f.name));
  if (failed.length) throw new FinalError(`the root image is encrypted, but loading ${failed.map((f) => `${f.name} (${f.error})`).join(", ")} failed`);
  return r;
}

/** The dm-crypt table of an encrypted image on `device` (MAJOR:MINOR), its key named in the kernel keyring. */
export function cryptTarget(e: ImageEncryption, device: string, sizeBytes: number, keyDescription = KEY_DESCRIPTION): DmTarget {
  if (!/^\d+:\d+$/.test(device)) throw new Error(`dm-crypt: device "${device}" is not MAJOR:MINOR`);
  if (sizeBytes <= 0 || sizeBytes % e.sectorSize !== 0) throw new Error(`dm-crypt: the image's ${sizeBytes} bytes are not whole ${e.sectorSize}-byte encryption sectors`);
  // <cipher> <key> <iv_offset> <device> <offset> <#opt> <opt...>; no iv_large_sectors: IVs count 512-byte units, as
  // `image pack --encrypt` wrote them.
  const opts = e.sectorSize === 512 ? "" : ` 1 sector_size:${e.sectorSize}`;
  return { start: 0, length: sizeBytes / 512, type: "crypt", params: `${e.cipher} :${e.keySize}:logon:${keyDescription} 0 ${device} 0${opts}` };
}

export interface CryptRootOptions {
  /** The loop device holding the ciphertext (/dev/loopN). */
  loopDevice: string;
  /** The ciphertext's size in bytes (the signed manifest's size). */
  size: number;
  encryption: ImageEncryption;
  key: Uint8Array;
  devDir?: string;
  sysDir?: string;
}

/** Opens the encrypted image read-only as /dev/mapper/airroot-root and returns that path. */
export function openCryptRoot(o: CryptRootOptions): string {
  const devDir = o.devDir ?? "/dev", sysDir = o.sysDir ?? "/sys";
  if (o.key.length !== o.encryption.keySize) throw new FinalError(`the server's key for the encrypted root image has ${o.key.length} bytes, its manifest says ${o.encryption.keySize}`);
  if (keyCheck(o.key) !== o.encryption.keyCheck) {
    throw new FinalError("the server's key does not open this encrypted root image (its key check differs from the signed manifest's): " +
      "the server's STATE/image-keys/DIGEST.key is not this image's key; restore it from backup or re-pack the image");
  }
  const loop = basename(o.loopDevice);
  const majMin = readFileSync(join(sysDir, "class/block", loop, "dev"), "utf8").trim();
  const target = cryptTarget(o.encryption, majMin, o.size);
  const serial = addLogonKey(KEY_DESCRIPTION, o.key);
  let dm;
  try {
    dm = createDmDevice(CRYPT_ROOT_NAME, [target], { readOnly: true, secret: true });
  } catch (e) {
    throw new Error(`opening the encrypted root image with dm-crypt over ${o.loopDevice}: ${(e as Error).message}; ` +
      "the kernel log (dmesg) has device-mapper's reason");
  } finally {
    const left = dropKey(serial); // dm-crypt copied it at table load (or failed): the keyring copy goes now either way
    if (left) console.error(`warning: the root image key stays in this thread's keyring until switch_root: ${left}`);
  }
  // devtmpfs names the node dm-MINOR; udev's /dev/mapper/NAME link is made here (there is no udev in the initramfs).
  const node = basename(readlinkSync(join(sysDir, "dev/block", `${dm.major}:${dm.minor}`)));
  const mapper = join(devDir, "mapper", CRYPT_ROOT_NAME);
  mkdirSync(join(devDir, "mapper"), { recursive: true });
  if (!existsSync(mapper)) symlinkSync(`../${node}`, mapper);
  return mapper;
}

/** Removes the dm-crypt device after a failed mount (deferred: a lazily unmounted squashfs may still hold it). */
export function closeCryptRoot(devDir = "/dev"): void {
  try { removeDmDevice(CRYPT_ROOT_NAME, { deferred: true }); } catch { /* never made, or already gone */ }
  try { unlinkSync(join(devDir, "mapper", CRYPT_ROOT_NAME)); } catch { /* no link */ }
}

/**
 * What the root step needs to open the image: nothing for a plain one (a key sent with it is ignored: the signed
 * manifest says what the image is), else the manifest's record with the key from the config, or a FinalError saying
 * why the node cannot open it.
 */
export function rootCryptFor(m: Pick<Manifest, "digest" | "size" | "encryption"> | undefined, grant: ImageKeyGrant | undefined): RootCrypt | undefined {
  if (!m?.encryption) return undefined;
  if (!grant) {
    throw new FinalError(`root image ${m.digest} is encrypted, but the server's config gave this node no key for it: ` +
      `the server is missing STATE/image-keys/${m.digest}.key (restore it from backup) or predates encrypted images`);
  }
  if (grant.cipher !== m.encryption.cipher || !/^[0-9a-f]+$/.test(grant.key) || grant.key.length !== m.encryption.keySize * 2) {
    throw new FinalError(`root image ${m.digest}: the server's key (${String(grant.cipher).slice(0, 40)}, ${String(grant.key).length / 2} bytes) ` +
      `does not fit the signed manifest's ${m.encryption.cipher} with ${m.encryption.keySize}-byte keys`);
  }
  return { encryption: m.encryption, size: m.size, key: Buffer.from(grant.key, "hex") };
}
