// The kernel keyring, for handing dm-crypt its key without it ever being readable from userspace: add_key(2) of type
// "logon" (the kernel refuses to read a logon key's payload back to any process), then KEYCTL_INVALIDATE once
// dm-crypt has its own copy. glibc has no wrappers (they live in libkeyutils), so these go through syscall(2).
import { dlopen, FFIType, ptr } from "bun:ffi";
import { errno, sysError } from "./libc";

const { i64 } = FFIType;
// syscall(2) with the number and five arguments: add_key takes five; libc.ts's binding passes only three.
let lib: ReturnType<typeof open> | undefined;
function open() {
  return dlopen("libc.so.6", { syscall: { args: [i64, i64, i64, i64, i64, i64], returns: i64 } });
}
const sys = () => (lib ??= open()).symbols.syscall;

/** x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
const SYS_add_key = 248;
const SYS_keyctl = 250;

/** Special keyring ids (include/uapi/linux/keyctl.h). */
export const KEY_SPEC_THREAD_KEYRING = -1;
export const KEY_SPEC_PROCESS_KEYRING = -2;
const KEYCTL_UNLINK = 9;
const KEYCTL_READ = 11;
const KEYCTL_INVALIDATE = 21;

/** A logon key's description must be "prefix:rest" (the kernel's logon_vet_description). */
const LOGON_DESC_RE = /^[A-Za-z0-9_-]+:[A-Za-z0-9._:-]{1,200}$/;

function cstr(s: string): Buffer {
  return Buffer.from(s + "\0", "utf8");
}

/** syscall(nr, up to five arguments); unused ones are 0. */
function call(what: () => string, nr: number, ...args: (number | bigint)[]): number {
  const a = [...args.map((x) => BigInt(x)), 0n, 0n, 0n, 0n, 0n];
  const r = sys()(BigInt(nr), a[0], a[1], a[2], a[3], a[4]);
  if (r < 0) throw sysError(what(), errno());
  return Number(r);
}

/**
 * add_key("logon", description, payload, keyring): returns the key's serial. The thread keyring by default: only the
 * calling thread can search it (dm-crypt's table load runs in the caller's context, so it finds the key there), and
 * execve drops it.
 */
export function addLogonKey(description: string, payload: Uint8Array, keyring = KEY_SPEC_THREAD_KEYRING): number {
  if (!LOGON_DESC_RE.test(description)) throw new Error(`add_key(logon): description "${description.slice(0, 80)}" must be PREFIX:NAME`);
  const type = cstr("logon"), desc = cstr(description);
  const data = Buffer.from(payload); // a private copy: the caller may wipe its own
  try {
    return call(() => `add_key(logon ${description})`, SYS_add_key, BigInt(ptr(type)), BigInt(ptr(desc)), BigInt(ptr(data)), data.length, keyring);
  } finally { data.fill(0); }
}

/** KEYCTL_INVALIDATE: the key is unusable at once and removed from every keyring by the kernel's garbage collector. */
export function invalidateKey(serial: number): void {
  call(() => `keyctl(INVALIDATE, key ${serial})`, SYS_keyctl, KEYCTL_INVALIDATE, serial);
}

/** KEYCTL_UNLINK from one keyring (when invalidation is refused). */
export function unlinkKey(serial: number, keyring = KEY_SPEC_THREAD_KEYRING): void {
  call(() => `keyctl(UNLINK, key ${serial})`, SYS_keyctl, KEYCTL_UNLINK, serial, keyring);
}

/** Removes a key we added: invalidated, else at least unlinked. Never throws (it runs in cleanup paths). */
export function dropKey(serial: number, keyring = KEY_SPEC_THREAD_KEYRING): string | undefined {
  try { invalidateKey(serial); return undefined; } catch (e) {
    try { unlinkKey(serial, keyring); return undefined; } catch (e2) { return `${(e as Error).message}; ${(e2 as Error).message}`; }
  }
}

/** KEYCTL_READ into a buffer: what userspace gets back (for tests: a logon key must refuse with EOPNOTSUPP). */
export function readKey(serial: number, max = 4096): Buffer {
  const buf = Buffer.alloc(max);
  const n = call(() => `keyctl(READ, key ${serial})`, SYS_keyctl, KEYCTL_READ, serial, BigInt(ptr(buf)), max);
  return buf.subarray(0, Math.min(n, max));
}
