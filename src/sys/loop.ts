// Loop devices through ioctl: attach a file read-only to a free /dev/loopN (LOOP_CONFIGURE, Linux 5.8+).
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from "node:fs";
import { ioctl, ioctlValue } from "./libc";

const LOOP_CTL_GET_FREE = 0x4c82;
const LOOP_CONFIGURE = 0x4c0a;
const LOOP_CLR_FD = 0x4c01;
const LO_FLAGS_READ_ONLY = 1;
const LO_FLAGS_AUTOCLEAR = 4;
/** struct loop_config: u32 fd, u32 block_size, struct loop_info64 (232 bytes), u64 reserved[8]. */
const LOOP_CONFIG_SIZE = 304;
const LO_FLAGS_OFFSET = 8 + 52; // loop_info64.lo_flags
const LO_FILE_NAME_OFFSET = 8 + 56; // loop_info64.lo_file_name[64]

/**
 * Attaches `file` read-only to a free loop device and calls `use(device)` (e.g. to mount it) while our own handle keeps
 * the device attached. With autoclear (default) the kernel detaches it at the last close, i.e. when `use` did not
 * take a reference (a mount does), so nothing leaks if the mount fails or the caller dies.
 */
export function attachLoop<T>(file: string, use: (dev: string) => T, o: { autoclear?: boolean; devDir?: string } = {}): T {
  const devDir = o.devDir ?? "/dev";
  const ctlPath = `${devDir}/loop-control`;
  if (!existsSync(ctlPath)) throw new Error(`loop setup for ${file}: ${ctlPath} missing (is the loop module loaded?)`);
  const fileFd = openSync(file, "r");
  try {
    // Another process may take the free device between GET_FREE and CONFIGURE: retry a few times.
    for (let attempt = 0; attempt < 8; attempt++) {
      const ctl = openSync(ctlPath, "r+");
      let n: number;
      try { n = ioctl(ctl, LOOP_CTL_GET_FREE, null, ctlPath); } finally { closeSync(ctl); }
      const dev = `${devDir}/loop${n}`;
      const loopFd = openSync(dev, "r");
      try {
        const cfg = new Uint8Array(LOOP_CONFIG_SIZE);
        const dv = new DataView(cfg.buffer);
        dv.setUint32(0, fileFd, true);
        dv.setUint32(LO_FLAGS_OFFSET, LO_FLAGS_READ_ONLY | (o.autoclear === false ? 0 : LO_FLAGS_AUTOCLEAR), true);
        cfg.set(new TextEncoder().encode(file.slice(-63)), LO_FILE_NAME_OFFSET);
        try {
          ioctl(loopFd, LOOP_CONFIGURE, cfg, `${dev} <- ${file}`);
        } catch (e) {
          if ((e as { code?: string }).code === "EBUSY") continue;
          throw e;
        }
        return use(dev);
      } finally {
        closeSync(loopFd);
      }
    }
    throw new Error(`loop setup for ${file}: every free loop device was taken concurrently, 8 times`);
  } finally {
    closeSync(fileFd);
  }
}

/** Detaches a loop device (only needed without autoclear). */
export function detachLoop(dev: string): void {
  const fd = openSync(dev, "r");
  try { ioctl(fd, LOOP_CLR_FD, null, dev); } finally { closeSync(fd); }
}

const LOOP_SET_STATUS64 = 0x4c04;
const LOOP_GET_STATUS64 = 0x4c05;
const LOOP_CHANGE_FD = 0x4c06;
const LOOP_SET_DIRECT_IO = 0x4c08;
const LOOP_INFO64_SIZE = 232;
const LO_SIZELIMIT_OFFSET = 32; // loop_info64: u64 lo_device, lo_inode, lo_rdevice, lo_offset, then lo_sizelimit

/** The file behind each attached loop device, by /dev name (from sysfs: no ioctl, nothing asked of the file). */
export function loopBackingFiles(sysBlock = "/sys/block"): { dev: string; file: string }[] {
  const out: { dev: string; file: string }[] = [];
  let names: string[] = [];
  try { names = readdirSync(sysBlock).filter((n) => /^loop\d+$/.test(n)); } catch { return out; }
  for (const n of names) {
    try { out.push({ dev: `/dev/${n}`, file: readFileSync(`${sysBlock}/${n}/loop/backing_file`, "utf8").trim() }); } catch { /* not attached */ }
  }
  return out;
}

/**
 * Switches the read-only loop device `dev` to `file` with LOOP_CHANGE_FD while it stays mounted, then asks for direct
 * I/O on it. The kernel's rules (drivers/block/loop.c, loop_change_fd): the device must be bound and LO_FLAGS_READ_ONLY
 * (attachLoop's are), the new file a regular file or block device, and its size (less lo_offset, capped by
 * lo_sizelimit) the old one's, else EINVAL. A larger block device is therefore first capped with lo_sizelimit = the
 * old size (LOOP_SET_STATUS64; the capacity does not change). The switch freezes the device's queue until the reads in
 * flight on the old file end, then reports a media change: the device's page cache is dropped and unused dentries and
 * inodes of the filesystem on it are evicted (bdev_mark_dead; squashfs has no shutdown hook, so it serves on).
 *
 * It blocks until the old file's reads in flight are served: a FUSE daemon must not call it on the thread that
 * serves that file (it runs in a child process, see src/mount/untether.ts). Direct I/O is best effort: `directIo` says
 * whether the kernel took it (it refuses when the new file cannot do O_DIRECT at the device's block size).
 */
export function changeLoopFile(dev: string, file: string, oldSize: number, newSize: number): { directIo: boolean; directIoError?: string } {
  const fileFd = openSync(file, "r");
  const loopFd = openSync(dev, "r");
  try {
    // The kernel compares sizes in 512-byte sectors (get_loop_size).
    if (Math.floor(newSize / 512) !== Math.floor(oldSize / 512)) {
      if (newSize < oldSize) throw new Error(`${file} has ${newSize} bytes, less than the ${oldSize} of ${dev}`);
      const info = new Uint8Array(LOOP_INFO64_SIZE);
      ioctl(loopFd, LOOP_GET_STATUS64, info, dev);
      new DataView(info.buffer).setBigUint64(LO_SIZELIMIT_OFFSET, BigInt(oldSize), true);
      ioctl(loopFd, LOOP_SET_STATUS64, info, `${dev} sizelimit ${oldSize}`);
    }
    ioctlValue(loopFd, LOOP_CHANGE_FD, fileFd, `${dev} <- ${file}`);
    try {
      ioctlValue(loopFd, LOOP_SET_DIRECT_IO, 1, `${dev} direct I/O`);
      return { directIo: true };
    } catch (e) {
      return { directIo: false, directIoError: (e as Error).message };
    }
  } finally {
    closeSync(loopFd);
    closeSync(fileFd);
  }
}
