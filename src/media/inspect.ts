// `airroot media inspect`: what a media file holds, read from the media itself (not only from its media.json): the
// kernel version from the bzImage header, each initramfs's size and SHA-256, the command line of GRUB's first menu
// entry, the site CA's fingerprint and the servers from the site cpio, the first stage's expected initramfs, and the
// boot methods the image's El Torito catalogue, MBR and GPT offer. Any difference from media.json is reported.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, existsSync, openSync, readSync, closeSync, statSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { MediaError, runTool } from "./tools";
import { SITE_PATH, STAGE2_PATH, caFingerprint, kernelVersion, parseStage2, readNewc, sha256, type Stage2Record } from "./contents";
import type { MediaFile, MediaManifest } from "./build";

export interface Inspection {
  file: string;
  kind: "iso" | "img";
  bytes: number;
  kernel?: MediaFile & { version: string };
  initrds: MediaFile[];
  stage2?: Stage2Record;
  cmdline?: string;
  siteCa?: { sha256: string; subject: string };
  servers: string[];
  bootMethods: string[];
  volumeUuid?: string;
  builtBy?: string;
  node?: string;
  /** Differences between the media's files and its media.json (empty: consistent). */
  mismatches: string[];
}

function head(file: string, n: number, at = 0): Buffer {
  const fd = openSync(file, "r");
  try { const b = Buffer.alloc(n); const got = readSync(fd, b, 0, n, at); return b.subarray(0, got); } finally { closeSync(fd); }
}

export function mediaKind(file: string): "iso" | "img" | null {
  if (head(file, 5, 0x8001).toString("latin1") === "CD001") return "iso";
  const bs = head(file, 512);
  if (bs.length === 512 && bs[510] === 0x55 && bs[511] === 0xaa && (bs.toString("latin1", 0x36, 0x39) === "FAT" || bs.toString("latin1", 0x52, 0x55) === "FAT")) return "img";
  return null;
}

/** Boot entries of an ISO from xorriso's El Torito and system area reports. */
function isoBootMethods(file: string): { methods: string[]; uuid?: string } {
  const rep = runTool("inspect", ["xorriso", "-indev", file, "-report_el_torito", "plain", "-report_system_area", "plain", "-pvd_info"]);
  const methods: string[] = [];
  if (/^El Torito boot img :\s+\d+\s+BIOS\s/m.test(rep)) methods.push("BIOS CD (El Torito)");
  if (/^El Torito boot img :\s+\d+\s+UEFI\s/m.test(rep)) methods.push("UEFI CD (El Torito EFI image)");
  if (/^System area summary:.*grub2-mbr/m.test(rep)) methods.push("BIOS USB disk (MBR, boot_hybrid)");
  if (/^GPT type GUID\s+:\s+\d+\s+28732ac11ff8d211ba4b00a0c93ec93b/m.test(rep)) methods.push("UEFI USB disk (GPT ESP)");
  // The ESP (GPT partition 2): Debian's signed shim + GRUB there means the media boots with Secure Boot.
  const esp = /^GPT start and size :\s+2\s+(\d+)\s+(\d+)/m.exec(rep);
  if (esp) {
    const list = runTool("inspect", ["mdir", "-b", "-i", `${file}@@${Number(esp[1]) * 512}`, "::/EFI/BOOT"], { MTOOLS_SKIP_CHECK: "1" });
    if (/grubx64\.efi/i.test(list) && /mmx64\.efi/i.test(list)) methods.push("UEFI Secure Boot (Debian's signed shim + GRUB, Debian-signed kernel)");
  }
  const m = /^Modif\. Time\s*:\s*(\d{16})/m.exec(rep) ?? /^Modif\. Time\s*:.*\((\d{16})\)/m.exec(rep);
  const uuid = m ? m[1].replace(/^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)$/, "$1-$2-$3-$4-$5-$6-$7") : undefined;
  return { methods, uuid };
}

function listFiles(dir: string, base = ""): string[] {
  const out: string[] = [];
  for (const n of readdirSync(join(dir, base)).sort()) {
    const rel = base ? `${base}/${n}` : n;
    if (statSync(join(dir, rel)).isDirectory()) out.push(...listFiles(dir, rel)); else out.push(rel);
  }
  return out;
}

export function inspectMedia(file: string): Inspection {
  if (!existsSync(file)) throw new MediaError("inspect", `${file} does not exist`);
  const kind = mediaKind(file);
  if (!kind) throw new MediaError("inspect", `${file} is neither an ISO9660 image nor a FAT image: not made by \`airroot media\``);
  const work = mkdtempSync(join(tmpdir(), "airroot-inspect-"));
  try {
    const x = join(work, "x");
    if (kind === "iso") {
      runTool("inspect", ["xorriso", "-osirrox", "on", "-indev", file, "-extract", "/boot", join(x, "boot"), "-extract", "/airroot", join(x, "airroot")]);
    } else {
      mkdirSync(x);
      runTool("inspect", ["mcopy", "-s", "-n", "-i", file, "::/boot", "::/airroot", x + "/"], { MTOOLS_SKIP_CHECK: "1" });
    }
    const r: Inspection = { file, kind, bytes: statSync(file).size, initrds: [], servers: [], bootMethods: [], mismatches: [] };
    const present = existsSync(x) ? listFiles(x) : [];
    const manifestPath = join(x, "airroot/media.json");
    let manifest: MediaManifest | undefined;
    if (existsSync(manifestPath)) {
      try { manifest = JSON.parse(readFileSync(manifestPath, "utf8")); } catch { r.mismatches.push("airroot/media.json is not JSON"); }
    } else r.mismatches.push("no airroot/media.json: not made by `airroot media`");
    r.builtBy = manifest?.builtBy; r.node = manifest?.node;
    const rec = (p: string): MediaFile => { const d = readFileSync(join(x, p)); return { path: p, sha256: sha256(d), size: d.length }; };
    if (present.includes("boot/vmlinuz")) {
      const k = rec("boot/vmlinuz");
      let version = "(not a bzImage)";
      try { version = kernelVersion(readFileSync(join(x, "boot/vmlinuz"))); } catch {}
      r.kernel = { ...k, version };
    }
    const cfgFile = present.includes("boot/grub/grub.cfg") ? join(x, "boot/grub/grub.cfg") : undefined;
    const cfg = cfgFile ? readFileSync(cfgFile, "utf8") : "";
    const linux = /^\s*linux\s+(\S+)\s*(.*)$/m.exec(cfg);
    r.cmdline = linux?.[2].trim();
    const initrdLine = /^\s*initrd\s+(.*)$/m.exec(cfg);
    for (const p of (initrdLine?.[1].trim().split(/\s+/) ?? []).map((s) => s.replace(/^\//, ""))) {
      if (!present.includes(p)) { r.mismatches.push(`grub.cfg loads /${p}, which the media does not hold`); continue; }
      r.initrds.push(rec(p));
    }
    // The site cpio: CA, servers, stage-2 record.
    if (present.includes("boot/site.cpio")) {
      const entries = readNewc(readFileSync(join(x, "boot/site.cpio")));
      const get = (p: string) => entries.find((e) => e.path === p)?.data;
      const ca = get(`${SITE_PATH}/ca.pem`);
      if (ca) { try { r.siteCa = caFingerprint(ca); } catch { r.mismatches.push("the site CA in boot/site.cpio is not a certificate"); } }
      const servers = get(`${SITE_PATH}/servers`);
      if (servers) r.servers = new TextDecoder().decode(servers).split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
      const st2 = get(STAGE2_PATH);
      if (st2) { try { r.stage2 = parseStage2(new TextDecoder().decode(st2)); } catch (e) { r.mismatches.push((e as Error).message); } }
    }
    if (kind === "iso") { const b = isoBootMethods(file); r.bootMethods = b.methods; r.volumeUuid = b.uuid; }
    else {
      const efi = runTool("inspect", ["mdir", "-b", "-i", file, "::/EFI/BOOT"], { MTOOLS_SKIP_CHECK: "1" });
      if (/BOOTX64\.EFI/i.test(efi)) r.bootMethods.push("UEFI (\\EFI\\BOOT\\BOOTX64.EFI on FAT: UEFI HTTP boot RAM disk, or a disk)");
    }
    if (manifest) {
      const cmp = (what: string, a: unknown, b: unknown) => { if (JSON.stringify(a) !== JSON.stringify(b)) r.mismatches.push(`${what}: media.json says ${JSON.stringify(b)}, the media holds ${JSON.stringify(a)}`); };
      cmp("kernel", r.kernel && { ...r.kernel }, manifest.kernel);
      cmp("initrds", r.initrds, manifest.initrds);
      cmp("cmdline", r.cmdline, manifest.cmdline);
      cmp("stage2", r.stage2 && { sha256: r.stage2.sha256, size: r.stage2.size, urlPath: r.stage2.urlPath },
        manifest.stage2 && { sha256: manifest.stage2.sha256, size: manifest.stage2.size, urlPath: manifest.stage2.urlPath });
      cmp("site CA", r.siteCa, manifest.siteCa);
      if (kind === "iso") cmp("volume UUID", r.volumeUuid, manifest.volumeUuid);
    }
    return r;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

export function formatInspection(r: Inspection): string {
  const L: string[] = [];
  L.push(`${r.file}: airroot ${r.kind === "iso" ? "hybrid ISO" : "FAT image"}, ${r.bytes} bytes (${mb(r.bytes)}${r.kind === "iso" ? `; Lenovo XCC takes up to 50 MB: ${r.bytes <= 50_000_000 ? "fits" : "TOO BIG"}` : ""})`);
  if (r.builtBy) L.push(`built by:      ${r.builtBy}${r.node ? ` for node ${r.node}` : ""}`);
  if (r.kernel) L.push(`kernel:        /${r.kernel.path} ${r.kernel.version}`, `               ${r.kernel.size} bytes, sha256 ${r.kernel.sha256}`);
  for (const i of r.initrds) L.push(`initramfs:     /${i.path} ${i.size} bytes (${mb(i.size)}), sha256 ${i.sha256}`);
  if (r.stage2) L.push(`second stage:  fetched from each server's ${r.stage2.urlPath}, accepted only with ${r.stage2.size} bytes and sha256 ${r.stage2.sha256}`);
  else L.push("second stage:  none (the full initramfs is on the media)");
  if (r.cmdline !== undefined) L.push(`command line:  ${r.cmdline}`);
  if (r.siteCa) L.push(`site CA:       ${r.siteCa.subject}`, `               SHA-256 ${r.siteCa.sha256}`);
  if (r.servers.length) L.push(`servers:       ${r.servers.join(" ")}`);
  L.push(`boot methods:  ${r.bootMethods.length ? r.bootMethods.join("; ") : "none found"}`);
  if (r.volumeUuid) L.push(`volume UUID:   ${r.volumeUuid} (GRUB finds the media by it)`);
  L.push(r.mismatches.length ? `MISMATCH with airroot/media.json:\n  ${r.mismatches.join("\n  ")}` : "consistent with airroot/media.json");
  return L.join("\n");
}
