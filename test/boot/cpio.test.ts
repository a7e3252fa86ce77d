// The newc cpio encoder, round-tripped through the real cpio tool.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { lstatSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { CpioArchive, archivePath } from "../../initramfs/cpio";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";

afterAll(removeScratchDirs);

function concat(chunks: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(chunks));
}

test("cpio round-trip through the real cpio -i: files, dirs, symlinks, devices, parents first", () => {
  const dir = scratchDir();
  const a = new CpioArchive();
  const big = new Uint8Array(70001).map((_, i) => (i * 31) & 0xff);
  a.add({ type: "file", path: "/init", mode: 0o755, data: new TextEncoder().encode("#!/bin/sh\n") });
  a.add({ type: "file", path: "usr/lib/deep/big.bin", data: big });
  a.add({ type: "file", path: "empty", data: new Uint8Array(0) });
  a.add({ type: "symlink", path: "lib", target: "usr/lib" });
  a.add({ type: "dir", path: "tmp", mode: 0o1777 });
  a.add({ type: "char", path: "dev/console", mode: 0o600, major: 5, minor: 1 });
  a.add({ type: "file", path: "odd name é", data: new TextEncoder().encode("x") });
  const archive = join(dir, "a.cpio");
  writeFileSync(archive, concat(a.encode()));

  const list = Bun.spawnSync(["cpio", "-it", "--quiet"], { stdin: Bun.file(archive), stdout: "pipe", stderr: "pipe" });
  expect(list.exitCode).toBe(0);
  const names = list.stdout.toString().trim().split("\n");
  expect(names.indexOf("usr")).toBeLessThan(names.indexOf("usr/lib"));
  expect(names.indexOf("usr/lib/deep")).toBeLessThan(names.indexOf("usr/lib/deep/big.bin"));

  const out = join(dir, "out");
  const ext = Bun.spawnSync(["sh", "-c", `mkdir -p ${out} && cd ${out} && cpio -idm --quiet --no-absolute-filenames < ${archive}`],
    { stdout: "pipe", stderr: "pipe" });
  expect(ext.stderr.toString()).toBe("");
  expect(ext.exitCode).toBe(0);
  expect(readFileSync(join(out, "init"), "utf8")).toBe("#!/bin/sh\n");
  expect(lstatSync(join(out, "init")).mode & 0o7777).toBe(0o755);
  expect(Buffer.compare(readFileSync(join(out, "usr/lib/deep/big.bin")), Buffer.from(big))).toBe(0);
  expect(readFileSync(join(out, "empty")).length).toBe(0);
  expect(readlinkSync(join(out, "lib"))).toBe("usr/lib");
  expect(lstatSync(join(out, "tmp")).mode & 0o7777).toBe(0o1777);
  const con = lstatSync(join(out, "dev/console"));
  expect(con.isCharacterDevice()).toBe(true);
  expect(con.rdev).toBe((5 << 8) | 1);
  expect(readFileSync(join(out, "odd name é"), "utf8")).toBe("x");
});

test("cpio rejects conflicts and bad paths", () => {
  const a = new CpioArchive();
  a.add({ type: "file", path: "a", data: new Uint8Array(1) });
  expect(() => a.add({ type: "file", path: "/a", data: new Uint8Array(1) })).toThrow(/added twice/);
  expect(() => a.add({ type: "file", path: "a/b", data: new Uint8Array(1) })).toThrow(/cannot hold/);
  expect(() => archivePath("x/../y")).toThrow(/\.\./);
  expect(() => archivePath("/")).toThrow(/empty/);
  a.add({ type: "dir", path: "d" });
  a.add({ type: "dir", path: "d/", mode: 0o700 }); // same dir twice is fine
});

test("every record is 4-byte aligned and the archive ends with the trailer", () => {
  for (let n = 0; n < 9; n++) {
    const a = new CpioArchive();
    a.add({ type: "file", path: "f".repeat(n + 1), data: new Uint8Array(n) });
    const buf = concat(a.encode());
    expect(buf.length % 4).toBe(0);
    expect(new TextDecoder().decode(buf.subarray(0, 6))).toBe("070701");
    expect(new TextDecoder().decode(buf).includes("TRAILER!!!")).toBe(true);
  }
});
