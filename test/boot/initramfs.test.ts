// initramfs/build.ts output, checked with the real cpio tool: layout, /init, tools with their libraries, modules.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, kernelDir } from "../helpers/boot";

let dir = "";
let names: string[] = [];
let tree = "";

beforeAll(() => {
  dir = scratchDir("airroot-initramfs-");
  mkdirSync(join(dir, "site/ssh"), { recursive: true });
  writeFileSync(join(dir, "site/ca.pem"), "-----BEGIN CERTIFICATE-----\n");
  writeFileSync(join(dir, "site/ssh/ca.pub"), "ssh-ed25519 AAAA ca\n");
  writeFileSync(join(dir, "extra.txt"), "extra\n");
  const out = buildTestInitramfs(join(dir, "i.cpio.zst"), [[join(dir, "extra.txt"), "opt/extra.txt"]], kernelDir(), join(dir, "site"));
  const l = Bun.spawnSync(["sh", "-c", `zstd -dc '${out}' | cpio -it --quiet`], { stdout: "pipe" });
  names = l.stdout.toString().trim().split("\n");
  tree = join(dir, "tree");
  mkdirSync(tree);
  Bun.spawnSync(["sh", "-c", `zstd -dc '${out}' | (cd '${tree}' && cpio -idm --quiet)`]);
}, 180_000);

afterAll(removeScratchDirs);

test("layout: /init script, airroot, busybox applets, usrmerge links, console node", () => {
  for (const n of ["init", "usr/bin/airroot", "usr/bin/busybox", "usr/bin/sh", "usr/bin/udhcpc", "usr/bin/ip", "bin", "lib", "dev/console",
    "etc/passwd", "etc/shadow", "etc/group", "tmp", "sysroot", "proc"]) expect(names).toContain(n);
  expect(names).not.toContain("usr/bin/init"); // busybox init must not shadow ours
  const init = readFileSync(join(tree, "init"), "utf8");
  expect(init).toStartWith("#!/usr/bin/busybox sh\n");
  expect(init).toContain("mount -t proc");
  expect(init).toContain("exec /usr/bin/airroot init");
});

test("sshd, ssh-keygen and airroot have every shared library they link", () => {
  for (const bin of ["usr/sbin/sshd", "usr/bin/ssh-keygen", "usr/bin/airroot"]) {
    const r = Bun.spawnSync(["chroot", tree, "/usr/lib64/ld-linux-x86-64.so.2", "--list", `/${bin}`], { stdout: "pipe", stderr: "pipe" });
    const text = r.stdout.toString() + r.stderr.toString();
    expect(text).not.toContain("not found");
    expect(r.exitCode).toBe(0);
  }
});

test("modules: the needed ones with their dependencies, indexed by depmod, stored uncompressed (or built into this kernel)", () => {
  const modDir = names.find((n) => /^usr\/lib\/modules\/[^/]+$/.test(n))!;
  const dep = readFileSync(join(tree, modDir, "modules.dep"), "utf8");
  const builtin = readFileSync(join(tree, modDir, "modules.builtin"), "utf8");
  // trixie builds fuse, virtio_pci and virtio_ring in; bookworm has them as modules.
  for (const m of ["fuse", "overlay", "squashfs", "loop", "virtio_net", "virtio_pci", "e1000", "virtio_ring", "failover"])
    expect(new RegExp(`/${m}\\.ko:`).test(dep) || new RegExp(`/${m}\\.ko$`, "m").test(builtin)).toBe(true);
  for (const m of ["overlay", "squashfs", "loop", "virtio_net"]) expect(dep).toMatch(new RegExp(`/${m}\\.ko:`));
  expect(dep).not.toMatch(/\.ko\.(xz|zst|gz)/);
  expect(readFileSync(join(tree, modDir, "modules.alias"), "utf8")).toMatch(/alias virtio:d00000001v\* virtio_net/);
});

test("site config and --add files", () => {
  expect(readFileSync(join(tree, "etc/airroot/site/ca.pem"), "utf8")).toContain("BEGIN CERTIFICATE");
  expect(readFileSync(join(tree, "etc/airroot/site/ssh/ca.pub"), "utf8")).toContain("ssh-ed25519");
  expect(readFileSync(join(tree, "opt/extra.txt"), "utf8")).toBe("extra\n");
});
