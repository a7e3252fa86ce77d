// The root filesystem: the squashfs image read-only at /mnt/remote, a tmpfs at /mnt/overlay, their overlay at /sysroot.
import { existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { mount, MNT_DETACH, MS_NODEV, MS_NOSUID, MS_RDONLY, umount2 } from "../sys/libc";
import { FinalError } from "./sequence";
import { attachLoop } from "../sys/loop";

export interface RootfsOptions {
  /** The squashfs file: local, or the FUSE-exposed file of the mount engine. */
  image: string;
  /** tmpfs size= for the writable layer (default 50%). */
  overlaySize?: string;
  /** Prefix for the three mount points (tests); default "" so /mnt/remote, /mnt/overlay, /sysroot. */
  prefix?: string;
  devDir?: string;
}

export interface RootfsResult {
  loopDevice: string;
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
  try {
    const loopDevice = attachLoop(o.image, (dev) => {
      mount({ source: dev, target: lower, fstype: "squashfs", flags: MS_RDONLY });
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
    return { loopDevice, lower, overlayDir, sysroot };
  } catch (e) {
    // Leave nothing half-mounted, so a retry (or the rescue shell user) starts clean.
    for (const m of mounted.reverse()) try { umount2(m, MNT_DETACH); } catch {}
    throw e;
  }
}
