// The root filesystem: the squashfs image read-only at /mnt/remote, a tmpfs at /mnt/overlay, their overlay at /sysroot.
// An encrypted image gets dm-crypt between its loop device and squashfs (./cryptroot).
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { mount, MNT_DETACH, MS_NODEV, MS_NOSUID, MS_RDONLY, umount2 } from "../sys/libc";
import { FinalError } from "./sequence";
import { attachLoop } from "../sys/loop";
import { closeCryptRoot, openCryptRoot } from "./cryptroot";
import type { ImageEncryption } from "../image/encrypt";

/** An encrypted image: its manifest's record and size, and the key from the server's config. */
export interface RootCrypt { encryption: ImageEncryption; size: number; key: Uint8Array }

export interface RootfsOptions {
  /** The squashfs file: local, or the FUSE-exposed file of the mount engine. */
  image: string;
  /** tmpfs size= for the writable layer (default 50%). */
  overlaySize?: string;
  /** Prefix for the three mount points (tests); default "" so /mnt/remote, /mnt/overlay, /sysroot. */
  prefix?: string;
  devDir?: string;
  /** Set for an encrypted image: squashfs is mounted from /dev/mapper/airroot-root over the loop device. */
  crypt?: RootCrypt;
}

export interface RootfsResult {
  loopDevice: string;
  /** /dev/mapper/airroot-root for an encrypted image. */
  cryptDevice?: string;
  lower: string;
  overlayDir: string;
  sysroot: string;
}

/** Mounts the layered root and returns where everything is. Each failure names the mount that failed. */
export function mountOverlayRoot(o: RootfsOptions): RootfsResult {
  const p = o.prefix ?? "";
  const lower = join(p || "/", "mnt/remote"), overlayDir = join(p || "/", "mnt/overlay"), sysroot = join(p || "/", "sysroot");
  if (!existsSync(o.image)) throw new FinalError(`root image ${o.image} does not exist`);
  if (!statSync(o.image).isFile()) throw new FinalError(`root image ${o.image} is not a regular file`);
  for (const d of [lower, overlayDir, sysroot]) mkdirSync(d, { recursive: true });
  const mounted: string[] = [];
  let cryptDevice: string | undefined;
  try {
    const loopDevice = attachLoop(o.image, (dev) => {
      // dm-crypt holds the loop device open like a mount would; the loop is below it, so untethering (which switches
      // the loop device's file to a local copy of the same ciphertext) works unchanged.
      if (o.crypt) cryptDevice = openCryptRoot({ loopDevice: dev, ...o.crypt, devDir: o.devDir });
      mount({ source: cryptDevice ?? dev, target: lower, fstype: "squashfs", flags: MS_RDONLY });
      mounted.push(lower);
      return dev;
    }, { devDir: o.devDir });
    mount({ source: "tmpfs", target: overlayDir, fstype: "tmpfs", flags: MS_NOSUID | MS_NODEV,
      data: `mode=0755,size=${o.overlaySize ?? "50%"}` });
    mounted.push(overlayDir);
    mkdirSync(join(overlayDir, "upper"), { mode: 0o755 });
    mkdirSync(join(overlayDir, "work"), { mode: 0o755 });
    mount({ source: "airroot", target: sysroot, fstype: "overlay", flags: 0,
      data: `lowerdir=${lower},upperdir=${overlayDir}/upper,workdir=${overlayDir}/work` });
    return { loopDevice, cryptDevice, lower, overlayDir, sysroot };
  } catch (e) {
    // Leave nothing half-mounted, so a retry (or the rescue shell user) starts clean.
    for (const m of mounted.reverse()) try { umount2(m, MNT_DETACH); } catch {}
    if (cryptDevice) closeCryptRoot(o.devDir);
    throw e;
  }
}
