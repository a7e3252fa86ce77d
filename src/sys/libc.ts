// The few Linux syscalls airroot needs that Bun does not expose, called through bun:ffi on glibc (libc.so.6).
import { dlopen, FFIType, read, CString, ptr } from "bun:ffi";
import { constants as osConstants } from "node:os";

const { ptr: P, i32, i64, u64, cstring } = FFIType;

// Loaded lazily so importing this module on a machine without glibc (or in a type-only context) never fails.
let lib: ReturnType<typeof open> | undefined;
function open() {
  return dlopen("libc.so.6", {
    __errno_location: { args: [], returns: P },
    strerror: { args: [i32], returns: cstring },
    mount: { args: [P, P, P, u64, P], returns: i32 },
    umount2: { args: [P, i32], returns: i32 },
    chroot: { args: [P], returns: i32 },
    chdir: { args: [P], returns: i32 },
    execve: { args: [P, P, P], returns: i32 },
    ioctl: { args: [i32, u64, P], returns: i32 },
    setsid: { args: [], returns: i32 },
    prctl: { args: [i32, u64, u64, u64, u64], returns: i32 },
    setsockopt: { args: [i32, i32, i32, P, i32], returns: i32 },
    madvise: { args: [u64, u64, i32], returns: i32 },
    // glibc has no wrapper for pivot_root or finit_module: go through syscall(2). Its variadic
    // int/pointer arguments travel in the same registers as fixed ones on x86-64.
    syscall: { args: [i64, u64, u64, u64], returns: i64 },
  });
}
function libc() {
  return (lib ??= open()).symbols;
}

/** x86-64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
const SYS_pivot_root = 155;
const SYS_finit_module = 313;

export const MS_RDONLY = 1;
export const MS_NOSUID = 2;
export const MS_NODEV = 4;
export const MS_NOEXEC = 8;
export const MS_REMOUNT = 32;
export const MS_BIND = 4096;
export const MS_MOVE = 8192;
export const MS_REC = 16384;
export const MS_PRIVATE = 1 << 18;
export const MS_SLAVE = 1 << 19;
export const MS_SHARED = 1 << 20;

export const MNT_FORCE = 1;
export const MNT_DETACH = 2;
export const MNT_EXPIRE = 4;
export const UMOUNT_NOFOLLOW = 8;

export const PR_SET_NAME = 15;
export const PR_SET_PDEATHSIG = 1;
export const PR_SET_CHILD_SUBREAPER = 36;

export const MODULE_INIT_IGNORE_MODVERSIONS = 1;
export const MODULE_INIT_IGNORE_VERMAGIC = 2;

/** An Error from a failed syscall: `.errno` is the number, `.code` the name ("EPERM"). */
export interface SysError extends Error {
  errno: number;
  code: string;
  syscall: string;
}

const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(osConstants.errno)) if (!errnoNames.has(num)) errnoNames.set(num, name);
// Linux's key-management errors, which node's os.constants.errno leaves out.
for (const [num, name] of [[126, "ENOKEY"], [127, "EKEYEXPIRED"], [128, "EKEYREVOKED"], [129, "EKEYREJECTED"]] as const)
  if (!errnoNames.has(num)) errnoNames.set(num, name);

/** The symbolic name of an errno ("EPERM"), or "E<number>" when unknown. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** The calling thread's errno; read it right after the failed call, before anything else runs. */
export function errno(): number {
  return read.i32(libc().__errno_location()!, 0);
}

/** strerror(3) text for an errno. */
export function strerror(errno: number): string {
  return String(libc().strerror(errno));
}

/**
 * Builds the Error for a failed call, e.g. `mount(fuse.airroot on /mnt/x) failed: EPERM (Operation not permitted)`.
 * `call` names the step and the thing it acted on.
 */
export function sysError(call: string, err: number): SysError {
  const code = errnoName(err);
  const e = new Error(`${call} failed: ${code} (${strerror(err)})`) as SysError;
  e.errno = err;
  e.code = code;
  e.syscall = call.replace(/\(.*$/, "");
  return e;
}

/** Throws sysError(call, errno) when a libc call returned a negative value. */
function check(ret: number | bigint, call: () => string): number {
  if (ret < 0) throw sysError(call(), errno());
  return Number(ret);
}

/** A NUL-terminated copy of a string that stays alive for the duration of the call. */
function cstr(s: string): Buffer {
  return Buffer.from(s + "\0", "utf8");
}
function cstrOrNull(s: string | null | undefined): Buffer | null {
  return s == null ? null : cstr(s);
}

export interface MountArgs {
  source: string;
  target: string;
  fstype?: string | null;
  flags?: number;
  data?: string | null;
}

/** mount(2). Throws e.g. `mount(fuse.airroot on /mnt/x) failed: EPERM (...)`. */
export function mount(a: MountArgs): void {
  const ret = libc().mount(cstr(a.source), cstr(a.target), cstrOrNull(a.fstype), a.flags ?? 0, cstrOrNull(a.data));
  check(ret, () => `mount(${a.fstype ?? a.source} on ${a.target})`);
}

/** umount2(2) with MNT_* flags. */
export function umount2(target: string, flags = 0): void {
  check(libc().umount2(cstr(target), flags), () => `umount2(${target})`);
}

export function chroot(path: string): void {
  check(libc().chroot(cstr(path)), () => `chroot(${path})`);
}

export function chdir(path: string): void {
  check(libc().chdir(cstr(path)), () => `chdir(${path})`);
}

/** pivot_root(2): make newRoot the root and move the old root to putOld (which must be under newRoot). */
export function pivotRoot(newRoot: string, putOld: string): void {
  const a = cstr(newRoot), b = cstr(putOld);
  check(libc().syscall(SYS_pivot_root, BigInt(ptr(a)), BigInt(ptr(b)), 0n), () => `pivot_root(${newRoot}, ${putOld})`);
}

/** finit_module(2): load a kernel module from an open fd with the given parameters ("" for none). */
export function finitModule(fd: number, params = "", flags = 0, what = `fd ${fd}`): void {
  const p = cstr(params);
  check(libc().syscall(SYS_finit_module, BigInt(fd), BigInt(ptr(p)), BigInt(flags)), () => `finit_module(${what})`);
}

/** Builds a NULL-terminated char*[] whose strings stay referenced by `keep`. */
function cstrArray(items: string[], keep: Buffer[]): BigUint64Array {
  const arr = new BigUint64Array(items.length + 1);
  items.forEach((s, i) => {
    const b = cstr(s);
    keep.push(b);
    arr[i] = BigInt(ptr(b));
  });
  return arr;
}

/**
 * execve(2): replaces the process image. Returns only by throwing. `env` defaults to the current environment.
 */
export function execve(path: string, argv: string[], env?: Record<string, string | undefined>): never {
  const keep: Buffer[] = [];
  const envList = Object.entries(env ?? process.env)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${v}`);
  const argvArr = cstrArray(argv, keep), envArr = cstrArray(envList, keep);
  const ret = libc().execve(cstr(path), argvArr, envArr);
  keep.length = 0;
  throw sysError(`execve(${path})`, ret < 0 ? errno() : 0);
}

/**
 * ioctl(2) with a pointer argument (pass a TypedArray; the kernel reads/writes it in place) or null.
 * Returns the non-negative result.
 */
export function ioctl(fd: number, request: number, arg: ArrayBufferView | null, what = `fd ${fd}`): number {
  return check(libc().ioctl(fd, request, arg as any), () => `ioctl(${what}, 0x${request.toString(16)})`);
}

/** ioctl(2) whose argument is an integer (e.g. a file descriptor, LOOP_CHANGE_FD), not a pointer. */
export function ioctlValue(fd: number, request: number, value: number, what = `fd ${fd}`): number {
  const SYS_ioctl = 16; // x86-64
  return check(libc().syscall(SYS_ioctl, BigInt(fd), BigInt(request), BigInt(value)), () => `ioctl(${what}, 0x${request.toString(16)}, ${value})`);
}

/** setsid(2): returns the new session id. */
export function setsid(): number {
  return check(libc().setsid(), () => "setsid()");
}

const SOL_SOCKET = 1, SO_RCVLOWAT = 18;
const intArg = new Int32Array(1);

/** setsockopt(SO_RCVLOWAT): poll and epoll report the socket readable only once `bytes` are queued (or at EOF). */
export function setRcvLowat(fd: number, bytes: number): void {
  intArg[0] = bytes;
  check(libc().setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, intArg, 4), () => `setsockopt(fd ${fd}, SO_RCVLOWAT, ${bytes})`);
}

/** prctl(2) with integer arguments. */
export function prctl(option: number, arg2: number | bigint = 0, arg3: number | bigint = 0,
                      arg4: number | bigint = 0, arg5: number | bigint = 0): number {
  return check(libc().prctl(option, arg2, arg3, arg4, arg5), () => `prctl(${option})`);
}

export const MADV_DONTNEED = 4;

/** madvise(2) on a page-aligned address range. */
export function madvise(addr: number, length: number, advice: number): void {
  check(libc().madvise(addr, length, advice), () => `madvise(0x${addr.toString(16)}, ${length}, ${advice})`);
}
