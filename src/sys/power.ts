// Power off or reboot the machine (reboot(2) via bun:ffi), for PID 1 when there is nothing else to do.
import { dlopen, FFIType } from "bun:ffi";
import { errno, sysError } from "./libc";

const RB_AUTOBOOT = 0x01234567;
const RB_POWER_OFF = 0x4321fedc;

let lib: ReturnType<typeof open> | undefined;
function open() {
  return dlopen("libc.so.6", { reboot: { args: [FFIType.i32], returns: FFIType.i32 }, sync: { args: [], returns: FFIType.void } });
}

/** Syncs filesystems and powers off. Returns only by throwing. */
export function powerOff(): never {
  const l = (lib ??= open()).symbols;
  l.sync();
  l.reboot(RB_POWER_OFF);
  throw sysError("reboot(POWER_OFF)", errno());
}

/** Syncs filesystems and reboots. Returns only by throwing. */
export function rebootNow(): never {
  const l = (lib ??= open()).symbols;
  l.sync();
  l.reboot(RB_AUTOBOOT);
  throw sysError("reboot(AUTOBOOT)", errno());
}
