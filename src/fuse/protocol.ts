// FUSE kernel protocol constants: opcodes, flags and struct sizes from include/uapi/linux/fuse.h (protocol 7.38).

/** The protocol version this server speaks; the kernel negotiates down to min(kernel, ours). */
export const FUSE_KERNEL_VERSION = 7;
export const FUSE_KERNEL_MINOR_VERSION = 38;
/** Oldest kernel minor we accept: 7.31 (Linux 5.4) has max_pages, readdirplus and everything we rely on. */
export const FUSE_MIN_MINOR_VERSION = 31;

export const FUSE_ROOT_ID = 1;

export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  SYMLINK: 6,
  MKNOD: 8,
  MKDIR: 9,
  UNLINK: 10,
  RMDIR: 11,
  RENAME: 12,
  LINK: 13,
  OPEN: 14,
  READ: 15,
  WRITE: 16,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  SETXATTR: 21,
  GETXATTR: 22,
  LISTXATTR: 23,
  REMOVEXATTR: 24,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  GETLK: 31,
  SETLK: 32,
  SETLKW: 33,
  ACCESS: 34,
  CREATE: 35,
  INTERRUPT: 36,
  BMAP: 37,
  DESTROY: 38,
  IOCTL: 39,
  POLL: 40,
  NOTIFY_REPLY: 41,
  BATCH_FORGET: 42,
  FALLOCATE: 43,
  READDIRPLUS: 44,
  RENAME2: 45,
  LSEEK: 46,
  COPY_FILE_RANGE: 47,
  SETUPMAPPING: 48,
  REMOVEMAPPING: 49,
  SYNCFS: 50,
  TMPFILE: 51,
} as const;

const opNames = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k]));
/** "READ" for 15, "OP_999" for unknown opcodes: for logs. */
export function opName(opcode: number): string {
  return opNames.get(opcode) ?? `OP_${opcode}`;
}

/** fuse_init_in/out flags (first 32 bits). */
export const InitFlag = {
  ASYNC_READ: 1 << 0,
  POSIX_LOCKS: 1 << 1,
  ATOMIC_O_TRUNC: 1 << 3,
  EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6,
  SPLICE_WRITE: 1 << 7,
  SPLICE_MOVE: 1 << 8,
  SPLICE_READ: 1 << 9,
  FLOCK_LOCKS: 1 << 10,
  HAS_IOCTL_DIR: 1 << 11,
  AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20,
  ABORT_ERROR: 1 << 21,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  EXPLICIT_INVAL_DATA: 1 << 25,
  MAP_ALIGNMENT: 1 << 26,
  SUBMOUNTS: 1 << 27,
  HANDLE_KILLPRIV_V2: 1 << 28,
  SETXATTR_EXT: 1 << 29,
  INIT_EXT: 1 << 30,
} as const;

/** fuse_open_out.open_flags */
export const FOPEN_DIRECT_IO = 1 << 0;
export const FOPEN_KEEP_CACHE = 1 << 1;
export const FOPEN_NONSEEKABLE = 1 << 2;
export const FOPEN_CACHE_DIR = 1 << 3;

/** Struct sizes in bytes. */
export const Size = {
  IN_HEADER: 40,
  OUT_HEADER: 16,
  ATTR: 88,
  ENTRY_OUT: 128,
  ATTR_OUT: 104,
  OPEN_OUT: 16,
  INIT_IN_MIN: 16, // major, minor, max_readahead, flags: what kernels before 7.36 send
  INIT_OUT: 64,
  GETATTR_IN: 16,
  OPEN_IN: 8,
  READ_IN: 40,
  RELEASE_IN: 24,
  FLUSH_IN: 24,
  ACCESS_IN: 8,
  FORGET_IN: 8,
  BATCH_FORGET_IN: 8,
  FORGET_ONE: 16,
  INTERRUPT_IN: 8,
  GETXATTR_IN: 8,
  GETXATTR_OUT: 8,
  STATFS_OUT: 80,
  DIRENT_HEADER: 24, // ino, off, namelen, type; name follows, record padded to 8 bytes
} as const;

/** The kernel requires read buffers of at least this size. */
export const FUSE_MIN_READ_BUFFER = 8192;

/**
 * FUSE_NOTIFY_RESEND (notify code 7): a header-only write with unique 0 and error = 7 makes the kernel move every
 * request a server has read but not answered (the processing queues of all the connection's device files) back to
 * the pending queue; it sets bit 63 of each one's unique (FUSE_UNIQUE_RESEND), so a reply echoes it. Added in protocol
 * 7.40, Linux 6.9 (include/uapi/linux/fuse.h: "7.40 ... add FUSE_NOTIFY_RESEND, add FUSE_HAS_RESEND init flag";
 * commit 760eac73f9f6). The kernel advertises it with FUSE_HAS_RESEND (1ULL << 39) in INIT: bit 7 of flags2.
 * This machine's 6.18 kernel speaks 7.45 and sets it; Debian 12's 6.1 (7.37) has neither.
 */
export const FUSE_NOTIFY_RESEND = 7;
export const FUSE_NOTIFY_RESEND_MIN_MINOR = 40;
/** FUSE_HAS_RESEND, as a bit of fuse_init_in.flags2 (the upper 32 flag bits). */
export const INIT_FLAGS2_HAS_RESEND = 1 << (39 - 32);
/** Bit 63 of the unique of a request the kernel queued again after FUSE_NOTIFY_RESEND. */
export const FUSE_UNIQUE_RESEND = 1n << 63n;

/** _IOR(229, 0, uint32_t): makes a freshly opened /dev/fuse fd a clone of an existing session fd. */
export const FUSE_DEV_IOC_CLONE = 0x8004e500;

/** Errno values used by the server (Linux numbering). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  EIO: 5,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ERANGE: 34,
  ENOSYS: 38,
  ENODATA: 61,
  EPROTO: 71,
  EROFS: 30,
} as const;

/** File type bits of st_mode and d_type values. */
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const DT_DIR = 4;
export const DT_REG = 8;
