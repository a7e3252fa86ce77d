// initramfs/build.ts --stage1, the boot media's first stage: stage1.sh as /init, busybox, curl and zstd with every
// library they link, the NIC and filesystem modules indexed by depmod, and no airroot binary or sshd (those come
// with the full initramfs it fetches).
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { REPO } from "../helpers/boot";
import { buildTestStage1 } from "../helpers/media";

let tree = "", names: string[] = [];

beforeAll(() => {
  const dir = scratchDir("airroot-stage1-");
  const out = buildTestStage1(join(dir, "stage1.zst"));
  tree = join(dir, "tree");
  const r = Bun.spawnSync(["sh", "-c", `mkdir -p ${tree} && cd ${tree} && zstd -dc ${out} | cpio -idm --quiet && find . | sed 's|^\\./||'`], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  names = r.stdout.toString().split("\n").filter(Boolean);
}, 180_000);

afterAll(() => removeScratchDirs());

test("layout: stage1.sh is /init; busybox, curl, zstd; no airroot, no sshd", () => {
  expect(readFileSync(join(tree, "init"), "utf8")).toBe(readFileSync(join(REPO, "initramfs/stage1.sh"), "utf8"));
  for (const n of ["usr/bin/busybox", "usr/bin/curl", "usr/bin/zstd", "usr/bin/udhcpc", "usr/bin/cpio", "usr/bin/sha256sum", "etc/airroot/udhcpc.sh", "dev/console"])
    expect(names).toContain(n);
  for (const n of ["usr/bin/airroot", "usr/sbin/sshd"]) expect(names).not.toContain(n);
});

test("curl and zstd find every library they link inside the first stage", () => {
  for (const bin of ["/usr/bin/curl", "/usr/bin/zstd"]) {
    const r = Bun.spawnSync(["chroot", tree, bin, "--version"], { stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
  }
});

test("modules: virtio, the HPC NICs, fuse/overlay/squashfs/loop, indexed by depmod", () => {
  const modDir = names.find((n) => /^usr\/lib\/modules\/[^/]+$/.test(n))!;
  const dep = readFileSync(join(tree, modDir, "modules.dep"), "utf8");
  const builtin = readFileSync(join(tree, modDir, "modules.builtin"), "utf8");
  // Either in the first stage or built into the kernel (trixie builds fuse and virtio_pci in).
  for (const m of ["virtio_net", "virtio_pci", "e1000", "e1000e", "igb", "ixgbe", "i40e", "ice", "bnxt_en", "mlx5_core", "fuse", "overlay", "squashfs", "loop"])
    expect(new RegExp(`/${m}\\.ko:`).test(dep) || new RegExp(`/${m}\\.ko$`, "m").test(builtin)).toBe(true);
  expect(readFileSync(join(tree, modDir, "modules.alias"), "utf8")).toMatch(/alias virtio:d00000001v\* virtio_net/);
});
