// Builds boot media: `iso` (a hybrid image: BIOS El Torito and UEFI as a CD, BIOS MBR and UEFI GPT/ESP written to a
// USB disk) and `img` (a FAT image with the EFI loader, the form UEFI HTTP boot mounts as a RAM disk). Both hold the
// kernel, an initramfs, the site cpio and GRUB with the kernel command line baked in, and airroot/media.json.
//
// Two stages (the default for iso): the media's initramfs is the small first stage (initramfs/build.ts --stage1,
// ~10 MB); it fetches the full initramfs from the site's servers (/boot/initramfs, as `airroot serve boot-files`
// installs it) over HTTPS with the site CA and accepts it only with the size and SHA-256 recorded on the media. One
// stage: the full initramfs is on the media (no network fetch; today ~55 MB, beyond Lenovo XCC's 50 MB upload limit).
//
// Reproducible: the same inputs give the same bytes. Every file is staged with mtime SOURCE_DATE_EPOCH (default
// DEFAULT_EPOCH), FAT images are made with fixed ids, and the ISO's volume date (which GRUB reads as its UUID and
// finds the media by) is derived from the digest of the inputs, so two different media never share it.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { grubConfig, grubImage, isoEarlyConfig } from "./grub";
import { makeFat, type FatFile } from "./fat";
import { MediaError, GRUB_LIB, requireFile, runTool } from "./tools";
import {
  STAGE2_URL_PATH, caFingerprint, initrdFormat, kernelVersion, readSiteDir, sha256, siteCpio, siteServers, type Stage2Record,
} from "./contents";

/** 2026-01-01T00:00:00Z: file times when SOURCE_DATE_EPOCH is not set. */
export const DEFAULT_EPOCH = 1767225600;
/** Lenovo XCC's limit for uploaded virtual media (confluent's nodemedia documentation): 50 MB = 50,000,000 bytes. */
export const XCC_MEDIA_LIMIT = 50_000_000;
/** COMMAND_LINE_SIZE on x86. */
const MAX_CMDLINE = 2047;
export const DEFAULT_CONSOLE = "console=ttyS0,115200 console=tty0";
/** The ESP partition type GUID (C12A7328-F81F-11D2-BA4B-00A0C93EC93B) in GPT byte order, as xorriso wants it. */
const ESP_TYPE = "28732ac11ff8d211ba4b00a0c93ec93b";
/** "Basic data" type for the ISO9660 partition in the GPT. */
const ISO_TYPE = "a2a0d0ebe5b9334487c068b6b72699c7";
/** Debian's signed boot chain (shim-signed, grub-efi-amd64-signed): shim, the CD flavour of GRUB, MokManager. */
export const SIGNED = {
  shim: "/usr/lib/shim/shimx64.efi.signed",
  grub: "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
  mok: "/usr/lib/shim/mmx64.efi.signed",
};

export interface MediaOptions {
  kernel: string;
  /** The full airroot initramfs (dist/initramfs.cpio.zst). */
  initrd: string;
  /** The first stage (dist/initramfs-stage1.cpio.zst); used when stages is 2. */
  stage1: string;
  stages: 1 | 2;
  site: string;
  /** Kernel parameters before the ones airroot adds; default DEFAULT_CONSOLE. */
  cmdline?: string;
  /** A static airroot.ip=IFACE:ADDR/PREFIX[:GW] for one node (--node). */
  nodeIp?: string;
  nodeName?: string;
  out: string;
  /**
   * UEFI through Debian's signed shim and GRUB (shim-signed, grub-efi-amd64-signed) instead of our own GRUB binary,
   * so the media boots with Secure Boot enforcing. The signed GRUB only starts a kernel signed by Debian (bookworm's
   * stock kernel is), and finds the media by its /.disk/info file. BIOS boots are unchanged.
   */
  secureBoot?: boolean;
  /** SOURCE_DATE_EPOCH; default DEFAULT_EPOCH. */
  epoch?: number;
  /** airroot's version, recorded in media.json. */
  version: string;
  log?: (line: string) => void;
}

export interface MediaFile { path: string; sha256: string; size: number }

/** airroot/media.json: what the media holds, as built (inspect checks the files against it). */
export interface MediaManifest {
  format: "airroot-media-1";
  kind: "iso" | "img";
  builtBy: string;
  kernel: MediaFile & { version: string };
  initrds: MediaFile[];
  /** Two stages: the initramfs the first stage fetches and accepts. */
  stage2?: Stage2Record & { from: string };
  cmdline: string;
  node?: string;
  siteCa: { sha256: string; subject: string };
  servers: string[];
  bootMethods: string[];
  volumeUuid?: string;
  /** UEFI through Debian's signed shim + GRUB (Secure Boot). */
  secureBoot?: boolean;
}

const fileRecord = (path: string, data: Uint8Array): MediaFile => ({ path, sha256: sha256(data), size: data.length });

/** The command line: the caller's (or the console default), airroot.server from the site, airroot.ip for a node. */
export function mediaCmdline(o: { cmdline?: string; servers: string[]; nodeIp?: string }): string {
  const words = (o.cmdline ?? DEFAULT_CONSOLE).trim().split(/\s+/).filter(Boolean);
  const has = (name: string) => words.some((w) => w === name || w.startsWith(`${name}=`));
  // Servers are in the site directory anyway; on the command line too when every one can be written there
  // (link-local URLs need the boot interface as zone: those stay in the site's list only, which airroot reads).
  const plain = o.servers.filter((u) => /^https:\/\/[^\s,/[\]]+(:\d+)?(\/\S*)?$/.test(u) && !/^https:\/\/\[fe80:/i.test(u));
  if (!has("airroot.server") && o.servers.length && plain.length === o.servers.length) words.push(`airroot.server=${plain.join(",")}`);
  if (o.nodeIp) {
    if (has("airroot.ip")) throw new MediaError("cmdline", "--node sets airroot.ip: leave it out of --cmdline");
    words.push(o.nodeIp);
  }
  const s = words.join(" ");
  if (s.length > MAX_CMDLINE) throw new MediaError("cmdline", `the kernel command line is ${s.length} bytes, more than the kernel takes (${MAX_CMDLINE}); shorten --cmdline`);
  if (/[\n\r]/.test(s)) throw new MediaError("cmdline", "the kernel command line must be one line");
  return s;
}

interface Staged {
  work: string;
  stage: string;            // the tree that becomes the ISO9660 filesystem or the FAT
  files: Record<string, string>; // path in the media -> staged host file
  manifest: MediaManifest;
  digest: string;           // of every input: names the volume
  epoch: number;
}

function readInput(step: string, path: string, what: string, hint: string): Uint8Array {
  requireFile(step, path, what, hint);
  try { return readFileSync(path); } catch (e) { throw new MediaError(step, `cannot read ${what} ${path}: ${(e as Error).message}`); }
}

/** Checks the inputs, stages kernel, initramfs and site cpio, and describes them. */
function stageContents(o: MediaOptions, kind: "iso" | "img"): Staged {
  const epoch = o.epoch ?? DEFAULT_EPOCH;
  if (!Number.isSafeInteger(epoch) || epoch < 315532800) throw new MediaError("inputs", `SOURCE_DATE_EPOCH=${epoch} must be whole seconds after 1980 (FAT and ISO9660 dates start then)`);
  const kernel = readInput("kernel", o.kernel, "the kernel", "run `make initramfs` (dist/vmlinuz) or give --kernel");
  let version: string;
  try { version = kernelVersion(kernel); } catch (e) { throw new MediaError("kernel", `${o.kernel}: ${(e as Error).message}; give an x86-64 Linux bzImage with --kernel`); }
  const full = readInput("initramfs", o.initrd, "the initramfs", "run `make initramfs` (dist/initramfs.cpio.zst) or give --initrd");
  if (!initrdFormat(full)) throw new MediaError("initramfs", `${o.initrd} is not a zstd, xz, gzip or cpio initramfs`);
  let onMedia = full;
  let stage2: MediaManifest["stage2"];
  if (o.stages === 2) {
    onMedia = readInput("stage1", o.stage1, "the first stage", "run `make initramfs` (dist/initramfs-stage1.cpio.zst) or give --stage1");
    if (!initrdFormat(onMedia)) throw new MediaError("stage1", `${o.stage1} is not a zstd, xz, gzip or cpio initramfs`);
    if (initrdFormat(full) !== "zstd" && initrdFormat(full) !== "xz")
      throw new MediaError("initramfs", `${o.initrd}: the first stage unpacks zstd or xz only; build it with initramfs/build.ts`);
    stage2 = { sha256: sha256(full), size: full.length, urlPath: STAGE2_URL_PATH, from: resolve(o.initrd) };
  }
  const site = readSiteDir(o.site);
  const servers = siteServers(site);
  if (o.stages === 2 && !servers.length && !/(^|\s)airroot\.server=/.test(o.cmdline ?? ""))
    throw new MediaError("site", `${o.site}/servers names no server, and the first stage fetches the initramfs from one; give airroot.server=https://... in --cmdline or make the site with \`airroot serve site-config\``);
  const cmdline = mediaCmdline({ cmdline: o.cmdline, servers, nodeIp: o.nodeIp });
  let ca;
  try { ca = caFingerprint(site.find(([n]) => n === "ca.pem")![1]); } catch (e) {
    throw new MediaError("site", `${o.site}/ca.pem is not a PEM certificate (${(e as Error).message})`);
  }
  const cpio = siteCpio(site, stage2);

  const work = mkdtempSync(join(tmpdir(), "airroot-media-"));
  const stage = join(work, "root");
  const files: Record<string, string> = {};
  const put = (path: string, data: Uint8Array | string) => {
    const host = join(stage, path);
    mkdirSync(dirname(host), { recursive: true });
    writeFileSync(host, data);
    files[path] = host;
  };
  const initrdName = o.stages === 2 ? "boot/stage1.img" : "boot/initramfs.img";
  put("boot/vmlinuz", kernel);
  put(initrdName, onMedia);
  put("boot/site.cpio", cpio);
  put("boot/grub/grub.cfg", grubConfig({
    kernel: "/boot/vmlinuz", initrds: [`/${initrdName}`, "/boot/site.cpio"], cmdline,
    title: o.nodeName ? `airroot (node ${o.nodeName})` : "airroot",
  }));
  const manifest: MediaManifest = {
    format: "airroot-media-1", kind, builtBy: `airroot ${o.version}`,
    kernel: { ...fileRecord("boot/vmlinuz", kernel), version },
    initrds: [fileRecord(initrdName, onMedia), fileRecord("boot/site.cpio", cpio)],
    ...(stage2 ? { stage2 } : {}),
    cmdline, ...(o.nodeName ? { node: o.nodeName } : {}), siteCa: ca, servers, ...(o.secureBoot ? { secureBoot: true } : {}),
    bootMethods: kind === "iso"
      ? ["BIOS CD (El Torito)", "UEFI CD (El Torito EFI image)", "BIOS USB disk (MBR, boot_hybrid)", "UEFI USB disk (GPT ESP)",
        ...(o.secureBoot ? ["UEFI Secure Boot (Debian's signed shim + GRUB, Debian-signed kernel)"] : [])]
      : ["UEFI (\\EFI\\BOOT\\BOOTX64.EFI on FAT: UEFI HTTP boot RAM disk, or a disk)"],
  };
  // The stage-2 path is recorded by digest only (the file's path on the build host does not change the bytes).
  const digest = sha256(new TextEncoder().encode(JSON.stringify({ ...manifest, stage2: stage2 && { ...stage2, from: "" } })));
  return { work, stage, files, manifest, digest, epoch };
}

/** ISO9660 volume date (xorriso --modification-date) and the UUID GRUB reads from it, from the inputs' digest. */
export function volumeId(digest: string): { date: string; uuid: string } {
  // A date in 2000-2099 picked by the digest: unique per content, still a valid ISO9660 date.
  const n = parseInt(digest.slice(0, 12), 16);
  const d = new Date(Date.UTC(2000, 0, 1) + (n % (100 * 365 * 86400)) * 1000);
  const cc = (parseInt(digest.slice(12, 14), 16) % 100).toString().padStart(2, "0");
  const p = (x: number) => x.toString().padStart(2, "0");
  const parts = [d.getUTCFullYear().toString(), p(d.getUTCMonth() + 1), p(d.getUTCDate()), p(d.getUTCHours()), p(d.getUTCMinutes()), p(d.getUTCSeconds()), cc];
  return { date: parts.join(""), uuid: parts.join("-") };
}

function setTimes(dir: string, files: string[], epoch: number): void {
  for (const f of files) utimesSync(f, epoch, epoch);
  // Directories too (xorriso records them).
  const seen = new Set<string>();
  for (const f of files) for (let d = dirname(f); d.startsWith(dir) && !seen.has(d); d = dirname(d)) { seen.add(d); utimesSync(d, epoch, epoch); }
}

/** Writes `out` atomically: built as a temporary file next to it and renamed; removed on any failure. */
async function atomicOutput(out: string, build: (tmp: string) => void | Promise<void>): Promise<void> {
  const dir = dirname(resolve(out));
  if (!existsSync(dir)) throw new MediaError("output", `the directory ${dir} for --out does not exist`);
  const tmp = join(dir, `.${basename(out)}.partial-${process.pid}`);
  const cleanup = () => rmSync(tmp, { force: true });
  const onSignal = () => { cleanup(); process.exit(130); };
  process.once("SIGINT", onSignal); process.once("SIGTERM", onSignal);
  try {
    await build(tmp);
    renameSync(tmp, out);
  } catch (e) {
    cleanup();
    throw e;
  } finally {
    process.off("SIGINT", onSignal); process.off("SIGTERM", onSignal);
  }
}

export interface BuildResult { out: string; bytes: number; manifest: MediaManifest }

export async function buildIso(o: MediaOptions): Promise<BuildResult> {
  const s = stageContents(o, "iso");
  try {
    const vol = volumeId(s.digest);
    s.manifest.volumeUuid = vol.uuid;
    const early = isoEarlyConfig(vol.uuid);
    const eltorito = join(s.stage, "boot/grub/i386-pc/eltorito.img");
    mkdirSync(dirname(eltorito), { recursive: true });
    o.log?.(o.secureBoot ? "grub: BIOS El Torito image; UEFI: Debian's signed shim + GRUB" : "grub: BIOS El Torito image and UEFI BOOTX64.EFI");
    grubImage("i386-pc-eltorito", eltorito, early, s.work);
    const espFiles: FatFile[] = [];
    if (o.secureBoot) {
      for (const [f, pkg] of [[SIGNED.shim, "shim-signed"], [SIGNED.grub, "grub-efi-amd64-signed"], [SIGNED.mok, "shim-signed"]])
        requireFile("esp", f, "Debian's signed boot loader", `apt-get install ${pkg} (or run scripts/deps.sh)`);
      const copy = (src: string, name: string) => { const d = join(s.work, "esp", name); mkdirSync(dirname(d), { recursive: true }); writeFileSync(d, readFileSync(src)); return d; };
      espFiles.push({ path: "EFI/BOOT/BOOTX64.EFI", src: copy(SIGNED.shim, "BOOTX64.EFI") },
        { path: "EFI/BOOT/grubx64.efi", src: copy(SIGNED.grub, "grubx64.efi") }, { path: "EFI/BOOT/mmx64.efi", src: copy(SIGNED.mok, "mmx64.efi") });
      // Debian's CD GRUB looks for the device holding /.disk/info and reads its /boot/grub/grub.cfg.
      mkdirSync(join(s.stage, ".disk"), { recursive: true });
      writeFileSync(join(s.stage, ".disk/info"), `airroot boot media ${vol.uuid}\n`);
      s.files[".disk/info"] = join(s.stage, ".disk/info");
    } else {
      const efi = join(s.work, "esp/BOOTX64.EFI");
      mkdirSync(dirname(efi), { recursive: true });
      grubImage("x86_64-efi", efi, early, s.work);
      espFiles.push({ path: "EFI/BOOT/BOOTX64.EFI", src: efi });
    }
    mkdirSync(join(s.stage, "airroot"), { recursive: true });
    writeFileSync(join(s.stage, "airroot/media.json"), JSON.stringify(s.manifest, null, 2) + "\n");
    const espImg = join(s.work, "efi.img");
    o.log?.(`esp: FAT image with ${espFiles.map((f) => f.path).join(", ")}`);
    makeFat(espImg, "AIRROOTEFI", espFiles, s.epoch, "esp");
    setTimes(s.stage, [...Object.values(s.files), eltorito, join(s.stage, "airroot/media.json")], s.epoch);
    const hybridMbr = join(GRUB_LIB, "i386-pc/boot_hybrid.img");
    requireFile("iso", hybridMbr, "GRUB's hybrid MBR", "apt-get install grub-pc-bin");
    o.log?.("iso: xorriso (hybrid: El Torito BIOS + EFI, MBR + GPT)");
    await atomicOutput(o.out, (tmp) => {
      runTool("iso", ["xorriso", "-as", "mkisofs", "-quiet", "-o", tmp, "-r", "-V", "AIRROOT", "-volset", "AIRROOT",
        "-publisher", "airroot", "-A", "airroot boot media", "--modification-date=" + vol.date,
        "--grub2-mbr", hybridMbr, "-partition_offset", "16", "--mbr-force-bootable",
        "-append_partition", "2", ESP_TYPE, espImg, "-appended_part_as_gpt", "-iso_mbr_part_type", ISO_TYPE,
        "-c", "/boot/boot.cat", "-b", "/boot/grub/i386-pc/eltorito.img", "-no-emul-boot", "-boot-load-size", "4",
        "-boot-info-table", "--grub2-boot-info",
        "-eltorito-alt-boot", "-e", "--interval:appended_partition_2:::", "-no-emul-boot",
        s.stage], { SOURCE_DATE_EPOCH: String(s.epoch) });
    });
    return { out: o.out, bytes: statSync(o.out).size, manifest: s.manifest };
  } finally {
    rmSync(s.work, { recursive: true, force: true });
  }
}

export async function buildImg(o: MediaOptions): Promise<BuildResult> {
  const s = stageContents(o, "img");
  try {
    // Loaded from the FAT itself: GRUB's prefix is /boot/grub on the device it was started from.
    const efi = join(s.stage, "EFI/BOOT/BOOTX64.EFI");
    mkdirSync(dirname(efi), { recursive: true });
    o.log?.("grub: UEFI BOOTX64.EFI");
    grubImage("x86_64-efi", efi, undefined, s.work);
    mkdirSync(join(s.stage, "airroot"), { recursive: true });
    const manifestFile = join(s.stage, "airroot/media.json");
    writeFileSync(manifestFile, JSON.stringify(s.manifest, null, 2) + "\n");
    const files: FatFile[] = [...Object.entries(s.files).map(([path, src]) => ({ path, src })),
      { path: "EFI/BOOT/BOOTX64.EFI", src: efi }, { path: "airroot/media.json", src: manifestFile }];
    o.log?.("img: FAT image");
    await atomicOutput(o.out, (tmp) => makeFat(tmp, "AIRROOT", files, s.epoch, "img"));
    return { out: o.out, bytes: statSync(o.out).size, manifest: s.manifest };
  } finally {
    rmSync(s.work, { recursive: true, force: true });
  }
}

