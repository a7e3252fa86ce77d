// `airroot media uki`: a signed unified kernel image (UKI). One PE binary, systemd-boot's EFI stub
// (/usr/lib/systemd/boot/efi/linuxx64.efi.stub, Debian's systemd-boot-efi) with the kernel (.linux), the initramfs
// (.initrd), the kernel command line (.cmdline), an os-release (.osrel) and airroot's own record of what went in
// (.airroot, JSON) added as PE sections, then signed with the site's Secure Boot key by osslsigncode. The
// firmware verifies the signature over every section before it runs the stub, so a changed byte anywhere in kernel,
// initramfs or command line makes it refuse the image; with Secure Boot on the stub ignores any command line the
// boot loader passes and uses the signed one.
//
// Which initramfs goes in: two stages by default (as `media iso`). The .initrd section is the small first stage
// (initramfs/build.ts --stage1) followed by the site cpio (the site directory and the size and SHA-256 of the full
// initramfs): the kernel unpacks concatenated cpio archives, and the stub passes the section as one initrd. The
// firmware verifies the first stage and the digest it holds, and the first stage accepts the full initramfs it fetches
// only with that digest: a chain of trust from the firmware's db to every byte of airroot init. `stages: 1` puts
// the full initramfs (plus the site cpio) in instead: no fetch, a larger file.
//
// bookworm has no ukify: objcopy adds the sections at virtual addresses after the stub's last section, each aligned
// to 4 KiB and not overlapping. Reproducible, signature included: same inputs, same signed bytes. objcopy's PE
// timestamp is replaced by SOURCE_DATE_EPOCH (default DEFAULT_EPOCH) and the PE checksum recomputed. The Authenticode
// signature (PKCS#7 SignedData) holds a signing time among its signed attributes: sbsign always writes the current
// time there, so osslsigncode signs instead, with `-time` (bookworm's 2.5 has it): SOURCE_DATE_EPOCH when set, else
// signingTime() below, derived from the build epoch and the certificate. Everything else in the signature is a function
// of the image, the key and the certificate (DER; RSA PKCS#1 v1.5 signing is deterministic); only another
// osslsigncode version may encode it differently (2.5 and 2.9 encode SpcPeImageData differently: other bytes).
// sbverify (sbsigntool) checks the result with the certificate before it replaces --out.
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { closeSync, existsSync, mkdtempSync, openSync, readSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { DEFAULT_EPOCH, mediaCmdline } from "./build";
import { STAGE2_URL_PATH, caFingerprint, initrdFormat, kernelVersion, readSiteDir, sha256, siteCpio, siteServers, type Stage2Record } from "./contents";
import { MediaError, requireFile, runTool } from "./tools";

/** systemd-boot's EFI stub (Debian: systemd-boot-efi). */
export const UKI_STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/** Section alignment of the added sections (a page; a multiple of the stub's SectionAlignment). */
const ALIGN = 0x1000;

export interface UkiOptions {
  kernel: string;
  /** The full airroot initramfs: in the image with stages 1; with 2 its digest is, and the first stage fetches it. */
  initrd: string;
  stage1: string;
  stages: 1 | 2;
  /** The site directory (CA, servers): the site cpio after the initramfs. Required for two stages. */
  site?: string;
  cmdline?: string;
  /** The Secure Boot signing key (unencrypted PEM) and its certificate (the one enrolled in the firmware's db). */
  key: string;
  cert: string;
  out: string;
  version: string;
  epoch?: number;
  stub?: string;
  log?: (line: string) => void;
}

export interface UkiPart { name: string; sha256: string; size: number }

/** The .airroot section: what the UKI holds, as built (inspect checks the sections against it). */
export interface UkiManifest {
  format: "airroot-uki-1";
  builtBy: string;
  kernel: UkiPart & { version: string };
  /** The archives concatenated in .initrd, in order (each but the last padded with zeros to 4 bytes). */
  initrd: UkiPart[];
  stage2?: Stage2Record;
  cmdline: string;
  siteCa?: { sha256: string; subject: string };
  servers: string[];
  signer: string;
}

export interface UkiSection { name: string; vma: number; size: number; sha256: string }
export interface UkiResult {
  out: string; bytes: number; manifest: UkiManifest; sections: UkiSection[];
  /** The signing time in the signature (Unix seconds): SOURCE_DATE_EPOCH, else signingTime(). */
  signingTime: number;
}

interface PeSection { name: string; virtualSize: number; va: number; rawSize: number; rawPtr: number }
interface PeInfo { peOff: number; sections: PeSection[]; sectionAlignment: number; checksumOff: number; certTable?: { off: number; size: number } }

/** The PE/COFF headers a UKI needs: section table, alignment, where the checksum and the certificate table are. */
export function parsePe(b: Buffer): PeInfo {
  if (b.length < 0x40 || b.toString("latin1", 0, 2) !== "MZ") throw new Error("not a PE file (no MZ header)");
  const peOff = b.readUInt32LE(0x3c);
  if (peOff + 24 > b.length || b.toString("latin1", peOff, peOff + 4) !== "PE\0\0") throw new Error("not a PE file (no PE signature)");
  const nsec = b.readUInt16LE(peOff + 6);
  const optSize = b.readUInt16LE(peOff + 20);
  const opt = peOff + 24;
  if (b.readUInt16LE(opt) !== 0x20b) throw new Error("not a PE32+ (64-bit) image");
  const sectionAlignment = b.readUInt32LE(opt + 32);
  const checksumOff = opt + 64;
  const ndirs = b.readUInt32LE(opt + 108);
  let certTable: PeInfo["certTable"];
  if (ndirs > 4) {
    const off = b.readUInt32LE(opt + 112 + 4 * 8), size = b.readUInt32LE(opt + 112 + 4 * 8 + 4);
    if (size) certTable = { off, size };
  }
  const sections: PeSection[] = [];
  for (let i = 0, s = opt + optSize; i < nsec; i++, s += 40) {
    if (s + 40 > b.length) throw new Error("PE section table runs past the end");
    const raw = b.subarray(s, s + 8);
    const end = raw.indexOf(0);
    sections.push({ name: raw.toString("latin1", 0, end < 0 ? 8 : end), virtualSize: b.readUInt32LE(s + 8), va: b.readUInt32LE(s + 12),
      rawSize: b.readUInt32LE(s + 16), rawPtr: b.readUInt32LE(s + 20) });
  }
  return { peOff, sections, sectionAlignment, checksumOff, certTable };
}

/** The PE checksum (as imagehlp's CheckSumMappedFile): 16-bit one's-complement-style sum, the field itself skipped, plus the length. */
export function peChecksum(b: Buffer, checksumOff: number): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) {
    if (i === checksumOff || i === checksumOff + 2) continue;
    sum += b.readUInt16LE(i);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (b.length & 1) { sum += b[b.length - 1]; sum = (sum & 0xffff) + (sum >>> 16); }
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum + b.length) >>> 0;
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/** Virtual addresses for the added sections: after the stub's last one, each aligned, none overlapping. */
export function sectionLayout(stub: PeInfo, sizes: [string, number][]): { name: string; vma: number; size: number }[] {
  const align = Math.max(ALIGN, stub.sectionAlignment);
  if (align % stub.sectionAlignment) throw new Error(`section alignment ${stub.sectionAlignment} does not divide ${ALIGN}`);
  let next = alignUp(Math.max(...stub.sections.map((s) => s.va + Math.max(s.virtualSize, s.rawSize))), align);
  return sizes.map(([name, size]) => { const vma = next; next = alignUp(vma + size, align); return { name, vma, size }; });
}

/** The signer subject(s) of a signed PE (sbverify --list); [] when it carries no signature. */
export function peSigners(file: string): string[] {
  const r = Bun.spawnSync(["sbverify", "--list", file], { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  const out = r.stdout.toString();
  return [...out.matchAll(/^\s*- subject:\s*(.+)$/gm)].map((m) => m[1].trim());
}

function readInput(step: string, path: string, what: string, hint: string): Buffer {
  requireFile(step, path, what, hint);
  try { return readFileSync(path); } catch (e) { throw new MediaError(step, `cannot read ${what} ${path}: ${(e as Error).message}`); }
}

/**
 * The signing time written into the signature when SOURCE_DATE_EPOCH is not set: the later of the build epoch
 * (DEFAULT_EPOCH, 2026-01-01, also the PE timestamp) and the certificate's notBefore, so that the signature is never
 * dated before the certificate existed. Both are inputs, so two builds with the same inputs get the same time.
 */
export function signingTime(epoch: number | undefined, certNotBefore: number): number {
  return epoch ?? Math.max(DEFAULT_EPOCH, certNotBefore);
}

/** Checks that KEY is an unencrypted private key and CERT its certificate; returns the certificate's subject and notBefore (Unix seconds). */
function checkKeyPair(key: string, cert: string): { subject: string; notBefore: number } {
  const keyPem = readInput("key", key, "the Secure Boot signing key", "give the site's db key (PEM) with --key");
  const certPem = readInput("key", cert, "the Secure Boot certificate", "give the certificate enrolled in the firmware's db (PEM) with --cert");
  if (/ENCRYPTED/.test(keyPem.toString("latin1")))
    throw new MediaError("key", `${key} is encrypted; osslsigncode is not given a passphrase here: decrypt it to a file only you can read (\`openssl pkey -in ${key} -out KEY.pem\`; umask 077) and give that`);
  let c: X509Certificate;
  try { c = new X509Certificate(certPem); } catch (e) { throw new MediaError("key", `${cert} is not a PEM certificate (${(e as Error).message})`); }
  let pub: string;
  try { pub = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "pem" }).toString(); } catch (e) {
    throw new MediaError("key", `${key} is not a PEM private key (${(e as Error).message})`);
  }
  if (c.publicKey.export({ type: "spki", format: "pem" }).toString() !== pub)
    throw new MediaError("key", `${key} is not the key of ${cert} (${c.subject.replace(/\n/g, ", ")}): give the matching pair`);
  if (c.publicKey.asymmetricKeyType !== "rsa") throw new MediaError("key", `${cert}: UEFI Secure Boot takes RSA keys; this one is ${c.publicKey.asymmetricKeyType}`);
  const notBefore = Math.floor(Date.parse(c.validFrom) / 1000);
  if (!Number.isSafeInteger(notBefore)) throw new MediaError("key", `${cert}: cannot read its notBefore (${c.validFrom})`);
  return { subject: c.subject.replace(/\n/g, ", "), notBefore };
}

/** Zero bytes up to a multiple of 4: the kernel looks for the next cpio header on a 4-byte boundary. */
const pad4 = (b: Uint8Array): Uint8Array => (b.length % 4 ? Buffer.concat([b, Buffer.alloc(4 - (b.length % 4))]) : b);

export async function buildUki(o: UkiOptions): Promise<UkiResult> {
  const epoch = o.epoch ?? DEFAULT_EPOCH;
  if (!Number.isSafeInteger(epoch) || epoch < 0 || epoch > 0xffffffff) throw new MediaError("inputs", `SOURCE_DATE_EPOCH=${epoch}: the PE timestamp takes whole seconds 0..2^32-1`);
  const stubPath = o.stub ?? UKI_STUB;
  const stub = readInput("stub", stubPath, "systemd-boot's EFI stub", "apt-get install systemd-boot-efi (or run scripts/deps.sh)");
  let stubPe: PeInfo;
  try { stubPe = parsePe(stub); } catch (e) { throw new MediaError("stub", `${stubPath}: ${(e as Error).message}`); }
  if (!stubPe.sections.some((s) => s.name === ".sdmagic")) throw new MediaError("stub", `${stubPath} is not systemd-boot's stub (no .sdmagic section)`);
  if (stubPe.sections.some((s) => [".linux", ".initrd", ".cmdline"].includes(s.name))) throw new MediaError("stub", `${stubPath} already holds a kernel: give the bare stub`);
  const { subject: signer, notBefore } = checkKeyPair(o.key, o.cert);
  const signedAt = signingTime(o.epoch, notBefore);

  const kernel = readInput("kernel", o.kernel, "the kernel", "run `make initramfs` (dist/vmlinuz) or give --kernel");
  let version: string;
  try { version = kernelVersion(kernel); } catch (e) { throw new MediaError("kernel", `${o.kernel}: ${(e as Error).message}; give an x86-64 Linux bzImage with --kernel`); }
  const full = readInput("initramfs", o.initrd, "the initramfs", "run `make initramfs` (dist/initramfs.cpio.zst) or give --initrd");
  if (!initrdFormat(full)) throw new MediaError("initramfs", `${o.initrd} is not a zstd, xz, gzip or cpio initramfs`);
  let first = full, firstName = basename(o.initrd);
  let stage2: Stage2Record | undefined;
  if (o.stages === 2) {
    if (!o.site) throw new MediaError("site", "two stages need --site (the site CA the first stage checks the servers with, and where the digest goes); or give --stages 1");
    first = readInput("stage1", o.stage1, "the first stage", "run `make media` (dist/initramfs-stage1.cpio.zst) or give --stage1");
    if (!initrdFormat(first)) throw new MediaError("stage1", `${o.stage1} is not a zstd, xz, gzip or cpio initramfs`);
    if (initrdFormat(full) !== "zstd" && initrdFormat(full) !== "xz")
      throw new MediaError("initramfs", `${o.initrd}: the first stage unpacks zstd or xz only; build it with initramfs/build.ts`);
    firstName = basename(o.stage1);
    stage2 = { sha256: sha256(full), size: full.length, urlPath: STAGE2_URL_PATH };
  }
  let servers: string[] = [], ca: UkiManifest["siteCa"], cpio: Uint8Array | undefined;
  if (o.site) {
    const site = readSiteDir(o.site);
    servers = siteServers(site);
    if (o.stages === 2 && !servers.length && !/(^|\s)airroot\.server=/.test(o.cmdline ?? ""))
      throw new MediaError("site", `${o.site}/servers names no server, and the first stage fetches the initramfs from one; give airroot.server=https://... in --cmdline or make the site with \`airroot serve site-config\``);
    try { ca = caFingerprint(site.find(([n]) => n === "ca.pem")![1]); } catch (e) {
      throw new MediaError("site", `${o.site}/ca.pem is not a PEM certificate (${(e as Error).message})`);
    }
    cpio = siteCpio(site, stage2);
  }
  const cmdline = mediaCmdline({ cmdline: o.cmdline, servers });
  const parts: [string, Uint8Array][] = [[firstName, first], ...(cpio ? [["site.cpio", cpio] as [string, Uint8Array]] : [])];
  const initrd = Buffer.concat(parts.map(([, d], i) => (i < parts.length - 1 ? pad4(d) : d)));
  const manifest: UkiManifest = {
    format: "airroot-uki-1", builtBy: `airroot ${o.version}`,
    kernel: { name: basename(o.kernel), sha256: sha256(kernel), size: kernel.length, version },
    initrd: parts.map(([name, d]) => ({ name, sha256: sha256(d), size: d.length })),
    ...(stage2 ? { stage2 } : {}), cmdline, ...(ca ? { siteCa: ca } : {}), servers, signer,
  };
  const osrel = `NAME="airroot"\nID=airroot\nVERSION_ID="${o.version}"\nPRETTY_NAME="airroot ${o.version} (Linux ${version})"\n` +
    `IMAGE_ID=airroot-node\n`;

  const work = mkdtempSync(join(tmpdir(), "airroot-uki-"));
  // Ctrl-C or SIGTERM: the steps run synchronously, so the signal is noted and acted on between steps (and before
  // the output is renamed into place): the partial output and the scratch directory are removed, exit 130/143.
  let stopped: NodeJS.Signals | undefined;
  const onSignal = (sig: NodeJS.Signals) => { stopped = sig; };
  process.on("SIGINT", onSignal); process.on("SIGTERM", onSignal);
  const checkStopped = async () => {
    await new Promise((r) => setImmediate(r)); // lets a pending signal's listener run
    if (stopped) throw new MediaError("stopped", `${stopped} received: nothing written`);
  };
  try {
    const contents: [string, Uint8Array][] = [
      [".osrel", new TextEncoder().encode(osrel)], [".cmdline", new TextEncoder().encode(cmdline)],
      [".airroot", new TextEncoder().encode(JSON.stringify(manifest, null, 2) + "\n")], [".linux", kernel], [".initrd", initrd],
    ];
    const layout = sectionLayout(stubPe, contents.map(([n, d]) => [n, d.length]));
    const objArgs: string[] = [];
    for (const [i, [name, data]] of contents.entries()) {
      const f = join(work, name.slice(1));
      writeFileSync(f, data);
      objArgs.push("--add-section", `${name}=${f}`, "--change-section-vma", `${name}=0x${layout[i].vma.toString(16)}`);
    }
    const unsigned = join(work, "unsigned.efi");
    o.log?.(`objcopy: ${layout.map((l) => `${l.name} ${l.size} bytes at 0x${l.vma.toString(16)}`).join(", ")}`);
    await checkStopped();
    runTool("objcopy", ["objcopy", ...objArgs, stubPath, unsigned]);
    await checkStopped();
    // objcopy stamps the PE with the current time: the build's epoch instead, and the checksum to match.
    const pe = readFileSync(unsigned);
    const info = parsePe(pe);
    pe.writeUInt32LE(epoch, info.peOff + 8);
    pe.writeUInt32LE(peChecksum(pe, info.checksumOff), info.checksumOff);
    writeFileSync(unsigned, pe);
    const sections: UkiSection[] = layout.map((l, i) => ({ ...l, sha256: sha256(contents[i][1]) }));
    for (const s of sections) {
      const got = info.sections.find((x) => x.name === s.name);
      if (!got || got.va !== s.vma || got.virtualSize !== s.size) throw new MediaError("objcopy", `objcopy did not place ${s.name} at 0x${s.vma.toString(16)} (${s.size} bytes)`);
    }
    const when = `${new Date(signedAt * 1000).toISOString().replace(".000Z", "Z")} (${o.epoch === undefined ? "the later of the default epoch and the certificate's notBefore" : "SOURCE_DATE_EPOCH"})`;
    o.log?.(`osslsigncode: signing with ${o.key} (${signer}), signing time ${when}`);
    await atomicFile(o.out, async (tmp) => {
      rmSync(tmp, { force: true }); // osslsigncode will not replace an existing -out
      // -time: the signing time in the signature (else the current time); no -t/-ts, so no timestamp server is asked.
      runTool("osslsigncode", ["osslsigncode", "sign", "-certs", o.cert, "-key", o.key, "-h", "sha256", "-time", String(signedAt), "-in", unsigned, "-out", tmp]);
      // Checked before it replaces --out: the signature verifies with the certificate.
      runTool("sbverify", ["sbverify", "--cert", o.cert, tmp]);
      await checkStopped();
    });
    return { out: o.out, bytes: statSync(o.out).size, manifest, sections, signingTime: signedAt };
  } finally {
    rmSync(work, { recursive: true, force: true });
    process.off("SIGINT", onSignal); process.off("SIGTERM", onSignal);
    if (stopped) process.exit(stopped === "SIGINT" ? 130 : 143);
  }
}

/** Writes `out` atomically: a temporary file next to it, renamed; removed on failure (buildUki turns a signal into one). */
async function atomicFile(out: string, build: (tmp: string) => void | Promise<void>): Promise<void> {
  const dir = dirname(resolve(out));
  if (!existsSync(dir)) throw new MediaError("output", `the directory ${dir} for --out does not exist`);
  const tmp = join(dir, `.${basename(out)}.partial-${process.pid}`);
  const cleanup = () => rmSync(tmp, { force: true });
  try {
    await build(tmp);
    renameSync(tmp, out);
  } catch (e) {
    cleanup();
    throw e;
  }
}

export function isUki(file: string): boolean {
  try {
    const fd = openSync(file, "r");
    try {
      const b = Buffer.alloc(4096);
      const n = readSync(fd, b, 0, b.length, 0);
      return parsePe(b.subarray(0, n)).sections.some((s) => s.name === ".linux");
    } finally { closeSync(fd); }
  } catch { return false; }
}

export interface UkiInspection {
  file: string;
  bytes: number;
  sections: { name: string; vma: number; size: number; sha256?: string }[];
  cmdline?: string;
  osrel?: string;
  kernelVersion?: string;
  manifest?: UkiManifest;
  signers: string[];
  mismatches: string[];
}

/** What a UKI holds: its sections (the added ones with their digests), command line, kernel, signer; checked against .airroot. */
export function inspectUki(file: string): UkiInspection {
  if (!existsSync(file)) throw new MediaError("inspect", `${file} does not exist`);
  const b = readFileSync(file);
  let pe: PeInfo;
  try { pe = parsePe(b); } catch (e) { throw new MediaError("inspect", `${file}: ${(e as Error).message}`); }
  const data = (s: PeSection) => b.subarray(s.rawPtr, s.rawPtr + Math.min(s.virtualSize, s.rawSize));
  const get = (n: string) => { const s = pe.sections.find((x) => x.name === n); return s && data(s); };
  const added = new Set([".osrel", ".cmdline", ".airroot", ".linux", ".initrd", ".uname", ".splash", ".dtb"]);
  const r: UkiInspection = {
    file, bytes: b.length, signers: peSigners(file), mismatches: [],
    sections: pe.sections.map((s) => ({ name: s.name, vma: s.va, size: s.virtualSize, ...(added.has(s.name) ? { sha256: sha256(data(s)) } : {}) })),
  };
  const text = (n: string) => { const d = get(n); return d && new TextDecoder().decode(d).replace(/\0+$/, ""); };
  r.cmdline = text(".cmdline")?.trim();
  r.osrel = text(".osrel");
  const linux = get(".linux");
  if (linux) { try { r.kernelVersion = kernelVersion(linux); } catch { r.kernelVersion = "(not a bzImage)"; } }
  const m = text(".airroot");
  if (m) { try { r.manifest = JSON.parse(m); } catch { r.mismatches.push(".airroot is not JSON"); } }
  else r.mismatches.push("no .airroot section: not made by `airroot media uki`");
  if (r.manifest) {
    const cmp = (what: string, a: unknown, want: unknown) => { if (JSON.stringify(a) !== JSON.stringify(want)) r.mismatches.push(`${what}: .airroot says ${JSON.stringify(want)}, the image holds ${JSON.stringify(a)}`); };
    cmp("cmdline", r.cmdline, r.manifest.cmdline);
    cmp("kernel", linux && sha256(linux), r.manifest.kernel.sha256);
    const initrd = get(".initrd");
    let off = 0;
    const got: UkiPart[] = [];
    for (const [i, p] of r.manifest.initrd.entries()) {
      const d = initrd?.subarray(off, off + p.size) ?? new Uint8Array();
      got.push({ name: p.name, sha256: sha256(d), size: d.length });
      off += i < r.manifest.initrd.length - 1 ? alignUp(p.size, 4) : p.size;
    }
    cmp("initrd", got, r.manifest.initrd);
    if (initrd && off !== initrd.length) r.mismatches.push(`.initrd is ${initrd.length} bytes, .airroot accounts for ${off}`);
  }
  if (!r.signers.length) r.mismatches.push("not signed: Secure Boot firmware refuses it");
  return r;
}

export function formatUkiInspection(r: UkiInspection): string {
  const L: string[] = [`${r.file}: airroot unified kernel image (UKI), ${r.bytes} bytes (${(r.bytes / 1e6).toFixed(1)} MB)`];
  const m = r.manifest;
  if (m) L.push(`built by:      ${m.builtBy}`);
  L.push(`signed by:     ${r.signers.length ? r.signers.join("; ") : "NOT SIGNED"}`);
  if (r.kernelVersion) L.push(`kernel:        .linux ${r.kernelVersion}${m ? `, ${m.kernel.size} bytes, sha256 ${m.kernel.sha256}` : ""}`);
  for (const p of m?.initrd ?? []) L.push(`initramfs:     .initrd ${p.name} ${p.size} bytes, sha256 ${p.sha256}`);
  if (m?.stage2) L.push(`second stage:  fetched from each server's ${m.stage2.urlPath}, accepted only with ${m.stage2.size} bytes and sha256 ${m.stage2.sha256}`);
  else if (m) L.push("second stage:  none (the full initramfs is in the image)");
  if (r.cmdline !== undefined) L.push(`command line:  ${r.cmdline}`);
  if (m?.siteCa) L.push(`site CA:       ${m.siteCa.subject}`, `               SHA-256 ${m.siteCa.sha256}`);
  if (m?.servers.length) L.push(`servers:       ${m.servers.join(" ")}`);
  L.push("sections:");
  for (const s of r.sections) L.push(`  ${s.name.padEnd(9)} 0x${s.vma.toString(16).padStart(8, "0")} ${String(s.size).padStart(9)} bytes${s.sha256 ? ` sha256 ${s.sha256}` : ""}`);
  L.push(r.mismatches.length ? `PROBLEMS:\n  ${r.mismatches.join("\n  ")}` : "consistent with its .airroot record; signed");
  return L.join("\n");
}
