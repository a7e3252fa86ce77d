// The boot tests' initramfs, optionally around a prebuilt airroot: AIRROOT_E2E_AIRROOT=PATH skips the private build
// (useful while the working tree does not build, or to boot a release binary); unset, it is buildTestInitramfs's.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { buildTestInitramfs, kernelDir, REPO } from "./boot";

export function initramfsForTests(out: string, site: string, kdir = kernelDir()): string {
  const bin = process.env.AIRROOT_E2E_AIRROOT;
  if (!bin) return buildTestInitramfs(out, [], kdir, site);
  if (!existsSync(bin)) throw new Error(`AIRROOT_E2E_AIRROOT=${bin} does not exist`);
  console.warn(`initramfs built around the prebuilt ${bin} (AIRROOT_E2E_AIRROOT), not the working tree`);
  const r = Bun.spawnSync([join(REPO, "node_modules/.bin/bun"), "initramfs/build.ts", "--kernel-dir", kdir, "--out", out,
    "--airroot", bin, "--level", "3", "--site", site], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`initramfs/build.ts failed: ${r.stderr.toString()}${r.stdout.toString()}`);
  return out;
}
