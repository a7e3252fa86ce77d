// GRUB for boot media: the configuration (one menu entry with the baked-in command line, one with the rescue shell)
// and the core images, built with grub-mkimage from Debian's grub-pc-bin / grub-efi-amd64-bin with only the modules a
// boot needs. grub-mkimage's output is deterministic (GRUB stamps a fixed PE time), so the media stays reproducible.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { GRUB_LIB, requireFile, runTool } from "./tools";

/** Modules linked into both core images: find the media, read its filesystem, load Linux, talk on serial. */
const COMMON = ["part_gpt", "part_msdos", "iso9660", "fat", "search", "search_fs_uuid", "search_label", "linux",
  "normal", "configfile", "echo", "test", "serial", "terminal"];
export const BIOS_MODULES = ["biosdisk", ...COMMON];
export const EFI_MODULES = [...COMMON, "efi_gop", "efi_uga"];

export interface GrubConfigInput {
  /** The complete kernel command line. */
  cmdline: string;
  /** initrd files in load order (GRUB concatenates them; the kernel unpacks each). */
  initrds: string[];
  kernel: string;
  /** What the menu says. */
  title: string;
}

/** GRUB's quoting: single quotes, with ' written as '\'' (the command line may hold anything but newlines). */
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export function grubConfig(i: GrubConfigInput): string {
  if (/[\n\r]/.test(i.cmdline)) throw new Error("the kernel command line must be one line");
  const entry = (title: string, extra: string) => [
    `menuentry ${q(title)} {`,
    `  echo ${q(`airroot: loading ${i.kernel} and ${i.initrds.join(" ")}`)}`,
    `  linux ${i.kernel} ${i.cmdline}${extra}`,
    `  initrd ${i.initrds.join(" ")}`,
    "}",
  ].join("\n");
  return [
    "# airroot boot media (`airroot media`): the kernel command line below is what the node boots with.",
    "serial --unit=0 --speed=115200",
    "terminal_input serial console",
    "terminal_output serial console",
    "set timeout=3",
    "set default=0",
    entry(i.title, ""),
    entry(`${i.title}: rescue shell before switch_root`, " airroot.shell"),
    "",
  ].join("\n");
}

/** The early config of an ISO's core images: find this very ISO by its volume UUID, then read its grub.cfg. */
export function isoEarlyConfig(uuid: string): string {
  return `search --no-floppy --set=root --fs-uuid ${uuid}\nset prefix=($root)/boot/grub\nconfigfile ($root)/boot/grub/grub.cfg\n`;
}

export type GrubTarget = "i386-pc-eltorito" | "x86_64-efi";

/** grub-mkimage for BIOS (El Torito image, also loaded by boot_hybrid.img from a USB disk) or UEFI (BOOTX64.EFI). */
export function grubImage(target: GrubTarget, out: string, earlyConfig: string | undefined, work: string): void {
  const platform = target === "x86_64-efi" ? "x86_64-efi" : "i386-pc";
  requireFile("grub", join(GRUB_LIB, platform, "linux.mod"), "GRUB module directory", `apt-get install ${platform === "i386-pc" ? "grub-pc-bin" : "grub-efi-amd64-bin"}`);
  const args = ["grub-mkimage", "-O", target, "-d", join(GRUB_LIB, platform), "-p", "/boot/grub", "-o", out];
  if (earlyConfig !== undefined) {
    const cfg = join(work, `early-${platform}.cfg`);
    writeFileSync(cfg, earlyConfig);
    args.push("-c", cfg);
  }
  args.push(...(platform === "i386-pc" ? BIOS_MODULES : EFI_MODULES));
  runTool(`grub (${platform})`, args);
}
