// Device-mapper without dmsetup: the dm_ioctl encoding against the kernel header (compiled here with the system's
// <linux/dm-ioctl.h>), the dm-crypt table for an encrypted image, and the checks before the root step opens one.
// This host's kernel has no device-mapper, so nothing here creates a device; the QEMU boot of an encrypted image does.
import { describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { scratchDir } from "../helpers/tmp";
import {
  decodeDmDev, dmRequest, DM_CMD, DM_DEFERRED_REMOVE, DM_IOCTL_OFFSETS, DM_IOCTL_SIZE, DM_READONLY_FLAG, DM_SECURE_DATA_FLAG,
  DM_TARGET_SPEC_OFFSETS, DM_TARGET_SPEC_SIZE, encodeDmIoctl, removeDmDevice,
} from "../../src/sys/dm";
import { cryptTarget, rootCryptFor, openCryptRoot, loadCryptModules, CRYPT_MODULES } from "../../src/boot/cryptroot";
import { keyCheck, newImageKey, type ImageEncryption } from "../../src/image/encrypt";

const HEADER = "/usr/include/linux/dm-ioctl.h";

describe("struct dm_ioctl", () => {
  test("sizes, offsets, ioctl numbers and flags match <linux/dm-ioctl.h>", () => {
    const cc = Bun.which("cc");
    if (!cc || !existsSync(HEADER)) { console.warn(`skipped: needs cc and ${HEADER} (linux-libc-dev)`); return; }
    const dir = scratchDir();
    writeFileSync(join(dir, "dm.c"), `#include <stdio.h>
#include <sys/ioctl.h>
#include <stddef.h>
#include <linux/dm-ioctl.h>
#define O(f) printf(#f " %zu\\n", offsetof(struct dm_ioctl, f))
#define T(f) printf("spec." #f " %zu\\n", offsetof(struct dm_target_spec, f))
int main(void) {
  printf("size %zu\\nspec %zu\\n", sizeof(struct dm_ioctl), sizeof(struct dm_target_spec));
  O(version); O(data_size); O(data_start); O(target_count); O(open_count); O(flags); O(event_nr); O(dev); O(name); O(uuid); O(data);
  T(sector_start); T(length); T(status); T(next); T(target_type);
  printf("VERSION %lu\\nDEV_CREATE %lu\\nDEV_REMOVE %lu\\nDEV_SUSPEND %lu\\nDEV_STATUS %lu\\nTABLE_LOAD %lu\\n", (unsigned long)DM_VERSION,
    (unsigned long)DM_DEV_CREATE, (unsigned long)DM_DEV_REMOVE, (unsigned long)DM_DEV_SUSPEND, (unsigned long)DM_DEV_STATUS, (unsigned long)DM_TABLE_LOAD);
  printf("READONLY %d\\nSECURE %d\\nDEFERRED %d\\n", DM_READONLY_FLAG, DM_SECURE_DATA_FLAG, DM_DEFERRED_REMOVE);
  return 0;
}
`);
    const build = Bun.spawnSync([cc, "-o", join(dir, "dm"), join(dir, "dm.c")], { stderr: "pipe" });
    expect(build.stderr.toString()).toBe("");
    const got = Object.fromEntries(Bun.spawnSync([join(dir, "dm")]).stdout.toString().trim().split("\n").map((l) => {
      const [k, v] = l.split(" ");
      return [k, Number(v)];
    }));
    const O = DM_IOCTL_OFFSETS, T = DM_TARGET_SPEC_OFFSETS;
    expect(got).toEqual({
      size: DM_IOCTL_SIZE, spec: DM_TARGET_SPEC_SIZE,
      version: O.version, data_size: O.dataSize, data_start: O.dataStart, target_count: O.targetCount, open_count: O.openCount,
      flags: O.flags, event_nr: O.eventNr, dev: O.dev, name: O.name, uuid: O.uuid, data: O.data,
      "spec.sector_start": T.sectorStart, "spec.length": T.length, "spec.status": T.status, "spec.next": T.next, "spec.target_type": T.targetType,
      VERSION: dmRequest(DM_CMD.VERSION), DEV_CREATE: dmRequest(DM_CMD.DEV_CREATE), DEV_REMOVE: dmRequest(DM_CMD.DEV_REMOVE),
      DEV_SUSPEND: dmRequest(DM_CMD.DEV_SUSPEND), DEV_STATUS: dmRequest(DM_CMD.DEV_STATUS), TABLE_LOAD: dmRequest(DM_CMD.TABLE_LOAD),
      READONLY: DM_READONLY_FLAG, SECURE: DM_SECURE_DATA_FLAG, DEFERRED: DM_DEFERRED_REMOVE,
    });
  });

  test("the ioctl numbers as the kernel defines them (also without a compiler)", () => {
    expect(dmRequest(DM_CMD.VERSION).toString(16)).toBe("c138fd00");
    expect(dmRequest(DM_CMD.TABLE_LOAD).toString(16)).toBe("c138fd09");
  });

  test("a table load: header, then each target spec 8-byte aligned with its NUL-terminated parameters", () => {
    const params = "aes-xts-plain64 :64:logon:airroot:root 0 7:0 0 1 sector_size:4096"; // 67 bytes
    const buf = encodeDmIoctl({ name: "airroot-root", flags: DM_READONLY_FLAG | DM_SECURE_DATA_FLAG,
      targets: [{ start: 0, length: 2048, type: "crypt", params }] });
    const dv = new DataView(buf.buffer);
    const specBytes = DM_TARGET_SPEC_SIZE + 72; // 67 + NUL, rounded up to 8
    expect(buf.length).toBe(DM_IOCTL_SIZE + specBytes);
    expect([0, 4, 8].map((o) => dv.getUint32(o, true))).toEqual([4, 0, 0]);
    expect(dv.getUint32(DM_IOCTL_OFFSETS.dataSize, true)).toBe(buf.length);
    expect(dv.getUint32(DM_IOCTL_OFFSETS.dataStart, true)).toBe(DM_IOCTL_SIZE);
    expect(dv.getUint32(DM_IOCTL_OFFSETS.targetCount, true)).toBe(1);
    expect(dv.getUint32(DM_IOCTL_OFFSETS.flags, true)).toBe(DM_READONLY_FLAG | DM_SECURE_DATA_FLAG);
    expect(Buffer.from(buf.subarray(DM_IOCTL_OFFSETS.name, DM_IOCTL_OFFSETS.name + 13)).toString("latin1")).toBe("airroot-root\0");
    expect(buf.subarray(DM_IOCTL_OFFSETS.uuid, DM_IOCTL_SIZE).every((b) => b === 0)).toBe(true);
    const s = DM_IOCTL_SIZE;
    expect(dv.getBigUint64(s + DM_TARGET_SPEC_OFFSETS.sectorStart, true)).toBe(0n);
    expect(dv.getBigUint64(s + DM_TARGET_SPEC_OFFSETS.length, true)).toBe(2048n);
    expect(dv.getUint32(s + DM_TARGET_SPEC_OFFSETS.next, true)).toBe(specBytes);
    expect(specBytes % 8).toBe(0);
    expect(Buffer.from(buf.subarray(s + 24, s + 30)).toString("latin1")).toBe("crypt\0");
    expect(Buffer.from(buf.subarray(s + 40, s + 40 + params.length + 1)).toString("latin1")).toBe(params + "\0");
    // The kernel's rule: room for the spec and the NUL past data_start (remaining - sizeof(spec) > next).
    expect(buf.length - DM_TARGET_SPEC_SIZE).toBeGreaterThan(DM_IOCTL_SIZE);
  });

  test("refuses what the kernel would, with the thing named", () => {
    expect(() => encodeDmIoctl({ name: "" })).toThrow(/name "" must be/);
    expect(() => encodeDmIoctl({ name: "a/b" })).toThrow(/without "\/"/);
    expect(() => encodeDmIoctl({ name: "x".repeat(128) })).toThrow(/1..127 bytes/);
    expect(() => encodeDmIoctl({ name: "x", targets: [{ start: 0, length: 0, type: "crypt", params: "" }] })).toThrow(/whole sectors/);
    expect(() => encodeDmIoctl({ name: "x", targets: [{ start: 0, length: 8, type: "crypt", params: "a\0b" }] })).toThrow(/NUL/);
  });

  test("the device number the kernel writes back (huge_encode_dev)", () => {
    const buf = encodeDmIoctl({ name: "x" });
    const enc = (major: number, minor: number) => (minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12);
    new DataView(buf.buffer).setBigUint64(DM_IOCTL_OFFSETS.dev, BigInt(enc(253, 3)), true);
    expect(decodeDmDev(buf)).toEqual({ major: 253, minor: 3 });
    new DataView(buf.buffer).setBigUint64(DM_IOCTL_OFFSETS.dev, BigInt(enc(253, 300)), true);
    expect(decodeDmDev(buf)).toEqual({ major: 253, minor: 300 });
  });

  test("without device-mapper the error names the control node and the module", () => {
    expect(() => removeDmDevice("airroot-root", { control: "/nonexistent/control" })).toThrow(/\/nonexistent\/control is missing \(is the dm_mod module loaded\?\)/);
  });
});

describe("dm-crypt for an encrypted root image", () => {
  const key = newImageKey();
  const enc: ImageEncryption = { cipher: "aes-xts-plain64", keySize: 64, sectorSize: 4096, plainSize: 8 * 4096 - 100, keyCheck: keyCheck(key) };

  test("the table names the logon key, never the key itself; IVs in 512-byte units (no iv_large_sectors)", () => {
    const t = cryptTarget(enc, "7:0", 8 * 4096);
    expect(t).toEqual({ start: 0, length: 64, type: "crypt", params: "aes-xts-plain64 :64:logon:airroot:root 0 7:0 0 1 sector_size:4096" });
    expect(t.params).not.toContain(key.toString("hex"));
    expect(cryptTarget({ ...enc, sectorSize: 512 }, "7:1", 1024).params).toBe("aes-xts-plain64 :64:logon:airroot:root 0 7:1 0");
    expect(() => cryptTarget(enc, "/dev/loop0", 8 * 4096)).toThrow(/MAJOR:MINOR/);
    expect(() => cryptTarget(enc, "7:0", 8 * 4096 + 512)).toThrow(/not whole 4096-byte encryption sectors/);
  });

  test("the root step opens an encrypted image only with a key that fits it", () => {
    const m = { digest: "a".repeat(64), size: 8 * 4096 };
    expect(rootCryptFor(m, undefined)).toBeUndefined(); // plain image
    expect(rootCryptFor(m, { cipher: "aes-xts-plain64", key: key.toString("hex") })).toBeUndefined(); // the manifest says plain
    expect(() => rootCryptFor({ ...m, encryption: enc }, undefined)).toThrow(/is encrypted, but the server's config gave this node no key for it: the server is missing STATE\/image-keys\/a{64}\.key/);
    expect(() => rootCryptFor({ ...m, encryption: enc }, { cipher: "aes-xts-plain64", key: "00" })).toThrow(/does not fit the signed manifest's aes-xts-plain64 with 64-byte keys/);
    const c = rootCryptFor({ ...m, encryption: enc }, { cipher: "aes-xts-plain64", key: key.toString("hex") })!;
    expect(c.size).toBe(8 * 4096);
    expect(Buffer.from(c.key).equals(key)).toBe(true);
    // A key that is not this image's is refused before anything reaches the kernel.
    expect(() => openCryptRoot({ loopDevice: "/dev/loop0", size: c.size, encryption: enc, key: newImageKey() }))
      .toThrow(/the server's key does not open this encrypted root image \(its key check differs/);
  });

  test("the initramfs's default modules include what dm-crypt needs", async () => {
    const { DEFAULT_MODULES } = await import("../../initramfs/build");
    for (const m of ["dm_mod", "dm_crypt"]) expect(DEFAULT_MODULES).toContain(m);
    expect(CRYPT_MODULES.slice(0, 2)).toEqual(["dm_mod", "dm_crypt"]);
  });
});

describe("createDmDevice", () => {
  const { createDmDevice } = require("../../src/sys/dm") as typeof import("../../src/sys/dm");
  const control = () => { const f = join(scratchDir(), "control"); writeFileSync(f, ""); return f; };
  const cmdOf = (req: number) => Object.entries(DM_CMD).find(([, n]) => dmRequest(n) === req)![0];
  const target = { start: 0, length: 64, type: "crypt", params: "aes-xts-plain64 :64:logon:airroot:root 0 7:0 0 1 sector_size:4096" };

  test("create, load the table read-only with the kernel told to wipe it, resume; the device number comes back", () => {
    const calls: { cmd: string; flags: number; name: string; targets: number }[] = [];
    const dm = createDmDevice("airroot-root", [target], { readOnly: true, secret: true, control: control(), ioctl: (_fd, req, buf) => {
      const dv = new DataView(buf.buffer);
      calls.push({ cmd: cmdOf(req), flags: dv.getUint32(DM_IOCTL_OFFSETS.flags, true), targets: dv.getUint32(DM_IOCTL_OFFSETS.targetCount, true),
        name: Buffer.from(buf.subarray(DM_IOCTL_OFFSETS.name, DM_IOCTL_OFFSETS.name + 12)).toString("latin1") });
      if (cmdOf(req) === "DEV_CREATE") dv.setBigUint64(DM_IOCTL_OFFSETS.dev, BigInt((253 << 8) | 0), true);
      return 0;
    } });
    expect(calls).toEqual([
      { cmd: "DEV_CREATE", flags: 0, name: "airroot-root", targets: 0 },
      { cmd: "TABLE_LOAD", flags: DM_READONLY_FLAG | DM_SECURE_DATA_FLAG, name: "airroot-root", targets: 1 },
      { cmd: "DEV_SUSPEND", flags: 0, name: "airroot-root", targets: 0 }, // no DM_SUSPEND_FLAG: resume
    ]);
    expect(dm).toEqual({ name: "airroot-root", major: 253, minor: 0 });
  });

  test("a table the kernel refuses: the half-made device is removed and the load's error reported", () => {
    const seen: string[] = [];
    let tableBuf: Uint8Array | undefined;
    expect(() => createDmDevice("airroot-root", [target], { secret: true, control: control(), ioctl: (_fd, req, buf) => {
      seen.push(cmdOf(req));
      if (cmdOf(req) === "TABLE_LOAD") { tableBuf = buf; throw new Error("ioctl(device-mapper TABLE_LOAD airroot-root) failed: EINVAL"); }
      return 0;
    } })).toThrow(/TABLE_LOAD airroot-root\) failed: EINVAL/);
    expect(seen).toEqual(["DEV_CREATE", "TABLE_LOAD", "DEV_REMOVE"]);
    expect(tableBuf!.every((b) => b === 0)).toBe(true); // our copy of the table is wiped too
  });
});

describe("the modules dm-crypt needs, from trixie's kernel", () => {
  const kernels = join(import.meta.dir, "../../.cache/kernel");
  const trixie = existsSync(kernels) ? require("node:fs").readdirSync(kernels).find((v: string) => /\+deb13-amd64$/.test(v)) : undefined;

  test("loaded in dependency order, AES and ECB being built in; a missing dm_crypt is named", async () => {
    if (!trixie) { console.warn(`skipped: no trixie kernel in ${kernels} (bash initramfs/fetch-kernel.sh)`); return; }
    const modulesDir = join(kernels, trixie, "lib/modules", trixie);
    const loaded: string[] = [];
    const r = await loadCryptModules({ modulesDir, procModules: "/nonexistent", load: (_p, _params, name) => { loaded.push(name); } });
    expect(new Set(loaded)).toEqual(new Set(["dm_mod", "dm_crypt", "xts", "cryptd", "crypto_simd", "gf128mul", "aesni_intel"]));
    expect(loaded.indexOf("dm_mod")).toBeLessThan(loaded.indexOf("dm_crypt"));
    expect(loaded.indexOf("cryptd")).toBeLessThan(loaded.indexOf("aesni_intel"));
    expect(r.missing).toEqual([]); // ecb: built in (modules.builtin)
    // A CPU without AES-NI: aesni_intel fails, the boot goes on (the built-in generic AES serves).
    await loadCryptModules({ modulesDir, procModules: "/nonexistent", load: (_p, _params, name) => {
      if (name === "aesni_intel") throw Object.assign(new Error("finit_module(aesni_intel) failed: ENODEV"), { code: "ENODEV" });
    } });
    await expect(loadCryptModules({ modulesDir, procModules: "/nonexistent", load: (_p, _params, name) => {
      if (name === "dm_crypt") throw Object.assign(new Error("finit_module(dm_crypt) failed: ENOEXEC"), { code: "ENOEXEC" });
    } })).rejects.toThrow(/the root image is encrypted, but loading dm_crypt \(finit_module\(dm_crypt\) failed: ENOEXEC\) failed/);
  });
});
