// The size of a block device, from sysfs: the kernel counts 512-byte sectors there whatever the device's own sector
// size. Used for the untether target (init), the fill's disk and the loop switch (mount).
import { readFileSync, realpathSync } from "node:fs";
import { basename } from "node:path";

/** Bytes of the block device at `path` (a /dev node or a symlink to one); throws if sysfs has no such device. */
export function blockDeviceBytes(path: string): number {
  return Number(readFileSync(`/sys/class/block/${basename(realpathSync(path))}/size`, "utf8").trim()) * 512;
}
