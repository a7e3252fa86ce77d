// Loop devices through ioctl: attach a file read-only to a free /dev/loopN (LOOP_CONFIGURE, Linux 5.8+).
import { closeSync, existsSync, openSync } from "node:fs";
import { ioctl } from "./libc";

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
