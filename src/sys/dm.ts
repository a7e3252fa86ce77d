// Device-mapper through its ioctls on /dev/mapper/control (no dmsetup, no libdevmapper in the initramfs): create a
// device, load its table, resume it; remove it again. Layouts from include/uapi/linux/dm-ioctl.h (interface 4):
//
//   struct dm_ioctl (312 bytes)           struct dm_target_spec (40 bytes), followed by its parameter string
//     0  u32 version[3]                     0  u64 sector_start
//    12  u32 data_size                      8  u64 length
//    16  u32 data_start                    16  s32 status
//    20  u32 target_count                  20  u32 next    (bytes from this spec to the next one)
//    24  s32 open_count                    24  char target_type[16]
//    28  u32 flags
//    32  u32 event_nr
//    36  u32 padding
//    40  u64 dev
//    48  char name[128]
//   176  char uuid[129]
//   305  char data[7]
//
// The kernel (drivers/md/dm-ioctl.c) wants: version[0] == 4 and version[1] <= its own minor; data_size >= 305; the
// first target spec at data_start >= sizeof(struct dm_ioctl); each `next` a multiple of 8; each parameter string
// NUL-terminated before the next spec and inside data_size.
import { closeSync, existsSync, openSync } from "node:fs";
import { ioctl } from "./libc";

export const DM_IOCTL_SIZE = 312;
export const DM_TARGET_SPEC_SIZE = 40;
export const DM_NAME_LEN = 128;
export const DM_UUID_LEN = 129;
export const DM_MAX_TYPE_NAME = 16;
export const DM_IOCTL_OFFSETS = {
  version: 0, dataSize: 12, dataStart: 16, targetCount: 20, openCount: 24, flags: 28, eventNr: 32, dev: 40, name: 48, uuid: 176, data: 305,
} as const;
export const DM_TARGET_SPEC_OFFSETS = { sectorStart: 0, length: 8, status: 16, next: 20, targetType: 24 } as const;

const DM_VERSION_MAJOR = 4;

/** The command numbers (enum in dm-ioctl.h). */
export const DM_CMD = { VERSION: 0, DEV_CREATE: 3, DEV_REMOVE: 4, DEV_SUSPEND: 6, DEV_STATUS: 7, TABLE_LOAD: 9 } as const;

/** _IOWR(0xfd, nr, struct dm_ioctl): read|write (3) << 30 | size << 16 | type << 8 | nr. */
export function dmRequest(nr: number): number {
  return ((3 << 30) >>> 0) + (DM_IOCTL_SIZE << 16) + (0xfd << 8) + nr;
}

export const DM_READONLY_FLAG = 1 << 0;
export const DM_SUSPEND_FLAG = 1 << 1;
/** The kernel wipes its copies of the buffer after use (the table names a key). */
export const DM_SECURE_DATA_FLAG = 1 << 15;
/** DEV_REMOVE of a device still open: removed when its last user closes it (a lazily unmounted filesystem). */
export const DM_DEFERRED_REMOVE = 1 << 17;

export interface DmTarget {
  start: number;   // 512-byte sectors
  length: number;  // 512-byte sectors
  type: string;    // "crypt", "linear", ...
  params: string;
}

const align8 = (n: number) => Math.ceil(n / 8) * 8;

/** One dm_ioctl buffer for a command on device `name`, with the targets of a table load after it. */
export function encodeDmIoctl(o: { name: string; flags?: number; targets?: DmTarget[]; extra?: number }): Uint8Array {
  const enc = new TextEncoder();
  const name = enc.encode(o.name);
  if (name.length === 0 || name.length >= DM_NAME_LEN || o.name.includes("/")) throw new Error(`device-mapper name "${o.name.slice(0, 140)}" must be 1..${DM_NAME_LEN - 1} bytes without "/"`);
  const specs = (o.targets ?? []).map((t) => {
    const type = enc.encode(t.type), params = enc.encode(t.params);
    if (type.length === 0 || type.length >= DM_MAX_TYPE_NAME) throw new Error(`device-mapper target type "${t.type}" is too long`);
    if (params.includes(0)) throw new Error("device-mapper target parameters contain a NUL byte");
    return { t, type, params, size: DM_TARGET_SPEC_SIZE + align8(params.length + 1) };
  });
  const size = DM_IOCTL_SIZE + specs.reduce((n, s) => n + s.size, 0) + (o.extra ?? 0);
  const buf = new Uint8Array(size);
  const dv = new DataView(buf.buffer);
  const O = DM_IOCTL_OFFSETS;
  dv.setUint32(O.version, DM_VERSION_MAJOR, true); // minor 0, patch 0: every 4.x kernel accepts it
  dv.setUint32(O.dataSize, size, true);
  dv.setUint32(O.dataStart, DM_IOCTL_SIZE, true);
  dv.setUint32(O.targetCount, specs.length, true);
  dv.setUint32(O.flags, o.flags ?? 0, true);
  buf.set(name, O.name);
  let at = DM_IOCTL_SIZE;
  for (const s of specs) {
    const T = DM_TARGET_SPEC_OFFSETS;
    if (!Number.isSafeInteger(s.t.start) || !Number.isSafeInteger(s.t.length) || s.t.start < 0 || s.t.length <= 0) {
      throw new Error(`device-mapper target ${s.t.type}: start ${s.t.start} and length ${s.t.length} must be whole sectors`);
    }
    dv.setBigUint64(at + T.sectorStart, BigInt(s.t.start), true);
    dv.setBigUint64(at + T.length, BigInt(s.t.length), true);
    dv.setUint32(at + T.next, s.size, true);
    buf.set(s.type, at + T.targetType);
    buf.set(s.params, at + DM_TARGET_SPEC_SIZE); // NUL and padding: already zero
    at += s.size;
  }
  return buf;
}

/** The device number the kernel wrote back (huge_encode_dev: minor low byte | major << 8 | minor high bits << 12). */
export function decodeDmDev(buf: Uint8Array): { major: number; minor: number } {
  const dev = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(DM_IOCTL_OFFSETS.dev, true));
  return { major: (dev >>> 8) & 0xfff, minor: (dev & 0xff) | ((dev >>> 12) & 0xfff00) };
}

/** The kernel's interface version, as it wrote it back into version[3]. */
export function decodeDmVersion(buf: Uint8Array): string {
  const dv = new DataView(buf.buffer, buf.byteOffset);
  return [0, 4, 8].map((o) => dv.getUint32(o, true)).join(".");
}

export const DM_CONTROL = "/dev/mapper/control";

function withControl<T>(control: string, f: (fd: number) => T): T {
  if (!existsSync(control)) throw new Error(`device-mapper: ${control} is missing (is the dm_mod module loaded?)`);
  const fd = openSync(control, "r+");
  try { return f(fd); } finally { closeSync(fd); }
}

/** The ioctl(2) used (tests give a recorder: this host may have no device-mapper). */
export type IoctlFn = (fd: number, request: number, arg: Uint8Array, what: string) => number;

function dmCall(fd: number, cmd: keyof typeof DM_CMD, what: string, o: Parameters<typeof encodeDmIoctl>[0], io: IoctlFn = ioctl): Uint8Array {
  const buf = encodeDmIoctl(o);
  try {
    io(fd, dmRequest(DM_CMD[cmd]), buf, `device-mapper ${cmd} ${what}`);
    return buf;
  } finally {
    if (o.flags && (o.flags & DM_SECURE_DATA_FLAG)) buf.fill(0); // our own copy of a secret-bearing table
  }
}

/** DM_VERSION: the kernel's device-mapper interface version ("4.48.0"). */
export function dmVersion(control = DM_CONTROL): string {
  return withControl(control, (fd) => decodeDmVersion(dmCall(fd, "VERSION", "", { name: "version" })));
}

export interface DmDevice { name: string; major: number; minor: number }

/**
 * Creates device `name` with one table, loaded and resumed (made live). Read-only devices open their underlying
 * devices read-only. On any failure after the create the half-made device is removed again, so a retry starts clean.
 */
export function createDmDevice(name: string, targets: DmTarget[],
  o: { readOnly?: boolean; secret?: boolean; control?: string; ioctl?: IoctlFn } = {}): DmDevice {
  return withControl(o.control ?? DM_CONTROL, (fd) => {
    const created = dmCall(fd, "DEV_CREATE", name, { name }, o.ioctl);
    try {
      const flags = (o.readOnly ? DM_READONLY_FLAG : 0) | (o.secret ? DM_SECURE_DATA_FLAG : 0);
      dmCall(fd, "TABLE_LOAD", name, { name, flags, targets }, o.ioctl);
      dmCall(fd, "DEV_SUSPEND", `${name} (resume)`, { name, flags: 0 }, o.ioctl); // without DM_SUSPEND_FLAG: resume
    } catch (e) {
      try { dmCall(fd, "DEV_REMOVE", name, { name }, o.ioctl); } catch { /* the first error is the one to report */ }
      throw e;
    }
    return { name, ...decodeDmDev(created) };
  });
}

/** DM_DEV_REMOVE: fails with EBUSY while the device is open or mounted, unless deferred to its last close. */
export function removeDmDevice(name: string, o: { deferred?: boolean; control?: string } = {}): void {
  withControl(o.control ?? DM_CONTROL, (fd) => { dmCall(fd, "DEV_REMOVE", name, { name, flags: o.deferred ? DM_DEFERRED_REMOVE : 0 }); });
}
