// Boot media test pieces: the media's first-stage initramfs (initramfs/build.ts --stage1) at a fast zstd level, and
// the QEMU machine arguments for each way firmware finds the media (CD, USB disk; SeaBIOS or OVMF).
import { copyFileSync } from "node:fs";
import { join } from "node:path";
import { kernelDir, REPO } from "./boot";

export function buildTestStage1(out: string, kdir = kernelDir(), level = 3): string {
  const r = Bun.spawnSync([join(REPO, "node_modules/.bin/bun"), "initramfs/build.ts", "--kernel-dir", kdir, "--out", out, "--stage1", "--level", String(level)],
    { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`initramfs/build.ts --stage1 failed: ${r.stderr.toString()}${r.stdout.toString()}`);
  return out;
}

export const OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd";
export const OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd";

export const OVMF_CODE_SECBOOT = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
/** OVMF's variable store with Microsoft's keys enrolled (shim is signed by Microsoft's UEFI CA): Secure Boot on. */
export const OVMF_VARS_MS = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/** OVMF vars with Debian's snakeoil key in PK, KEK and db: the stand-in for a site's own Secure Boot key. */
export const SNAKEOIL_VARS = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
export const SNAKEOIL_KEY = "/usr/share/ovmf/PkKek-1-snakeoil.key"; // passphrase "snakeoil"
export const SNAKEOIL_CERT = "/usr/share/ovmf/PkKek-1-snakeoil.pem";

export type MediaBoot = "bios-cd" | "bios-usb" | "uefi-cd" | "uefi-usb" | "uefi-secureboot-cd";

/** QEMU arguments that attach `image` the way `how` says (read-only) and pick the firmware; varsDir gets OVMF's vars copy. */
export function mediaMachineArgs(how: MediaBoot, image: string, varsDir: string): string[] {
  const args: string[] = [];
  if (how.startsWith("uefi")) {
    const secure = how.startsWith("uefi-secureboot");
    const vars = join(varsDir, `OVMF_VARS-${how}.fd`);
    copyFileSync(secure ? OVMF_VARS_MS : OVMF_VARS, vars);
    // Secure Boot needs SMM and the flash writable only from SMM, or the OS could rewrite the keys.
    if (secure) args.push("-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on");
    else args.push("-machine", "q35");
    args.push("-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${secure ? OVMF_CODE_SECBOOT : OVMF_CODE}`, "-drive", `if=pflash,format=raw,unit=1,file=${vars}`);
  }
  if (how.endsWith("cd")) args.push("-drive", `if=none,id=cd,file=${image},format=raw,media=cdrom,readonly=on`, "-device", "ide-cd,drive=cd,bootindex=0");
  else args.push("-device", "qemu-xhci,id=xhci", "-drive", `if=none,id=usb,file=${image},format=raw,readonly=on`, "-device", "usb-storage,bus=xhci.0,drive=usb,bootindex=0");
  return args;
}
