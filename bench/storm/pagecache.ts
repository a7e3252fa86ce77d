// Which pages of a file are in the host's page cache (mmap + mincore, libc through bun:ffi), and a way to drop them
// (posix_fadvise DONTNEED): how the storm's block trace is recorded from a loop device's backing file.
import { dlopen, FFIType, ptr } from "bun:ffi";
import { closeSync, fstatSync, openSync } from "node:fs";

const libc = dlopen("libc.so.6", {
  mmap: { args: [FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.i32, FFIType.i32, FFIType.i64], returns: FFIType.ptr },
  munmap: { args: [FFIType.ptr, FFIType.u64], returns: FFIType.i32 },
  mincore: { args: [FFIType.ptr, FFIType.u64, FFIType.ptr], returns: FFIType.i32 },
  posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 },
});
export const PAGE = 4096;
const PROT_READ = 1, MAP_SHARED = 1, POSIX_FADV_DONTNEED = 4;

/** One byte per page of `path`: 1 when resident. Mapping without touching faults nothing in. */
export function residentPages(path: string): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    const vec = new Uint8Array(Math.ceil(size / PAGE));
    const addr = libc.symbols.mmap(null, size, PROT_READ, MAP_SHARED, fd, 0);
    if (!addr || Number(addr) === -1) throw new Error(`mmap ${path} failed`);
    try {
      if (libc.symbols.mincore(addr, size, ptr(vec)) !== 0) throw new Error(`mincore ${path} failed`);
    } finally { libc.symbols.munmap(addr, size); }
    for (let i = 0; i < vec.length; i++) vec[i] &= 1;
    return vec;
  } finally { closeSync(fd); }
}

/** Asks the kernel to drop the file's clean cached pages (after a copy is synced: a cold start for the trace). */
export function dropPages(path: string): void {
  const fd = openSync(path, "r");
  try { libc.symbols.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); } finally { closeSync(fd); }
}

/** Pages resident in `now` but not in `before`, as [offset, length] byte runs in file order. */
export function newRuns(before: Uint8Array, now: Uint8Array): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < now.length; i++) {
    if (!now[i] || before[i]) continue;
    let j = i;
    while (j + 1 < now.length && now[j + 1] && !before[j + 1]) j++;
    runs.push([i * PAGE, (j - i + 1) * PAGE]);
    i = j;
  }
  return runs;
}
