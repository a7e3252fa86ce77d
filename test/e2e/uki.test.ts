// The signed unified kernel image (`airroot media uki`) under UEFI Secure Boot in QEMU (TCG): the firmware runs a
// UKI signed with the site key and refuses one with a single byte of its initramfs changed, an unsigned one, and one
// signed with a key its db does not hold. The signature is osslsigncode's with a fixed signing time (reproducible,
// src/media/uki.ts), the kind the firmware has to accept.
//
// The "site key enrolled in OVMF's variable store" is Debian's test key: the ovmf package ships
// OVMF_VARS_4M.snakeoil.fd, a variable store whose PK, KEK and db hold the "snakeoil" certificate
// (/usr/share/ovmf/PkKek-1-snakeoil.pem), with its private key (PkKek-1-snakeoil.key, passphrase "snakeoil"); the
// test signs with that pair exactly as a site signs with its own db key. Firmware: OVMF_CODE_4M.secboot.fd, q35 with
// SMM and the flash writable only from SMM, a writable copy of the vars file per boot.
//
// The UKI (two stages: kernel, the real first stage, the site cpio, the command line) is \EFI\BOOT\BOOTX64.EFI on a
// small FAT disk. Accepted: systemd-boot's stub starts the kernel, which reports Secure Boot enabled and runs the first
// stage, whose first console line appears; the command line has airroot.ip=none and airroot.rescue=poweroff, so the
// first stage stops at once (it needs the network) and powers off: no server is needed. Refused: OVMF prints
// "Access Denied" for the disk's boot option and no Linux line ever appears. User networking with restrict=on, no
// forwards. One VM at a time (qemuLock). Set AIRROOT_SKIP_VM=1 to skip (never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { E2E_CACHE, kernelDir, REPO } from "../helpers/boot";
import { buildTestStage1, OVMF_CODE_SECBOOT } from "../helpers/media";
import { collectConsole, qemuLock } from "../helpers/vm-node";
import { parsePe, peSigners } from "../../src/media/uki";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/uki.test.ts: skipped because AIRROOT_SKIP_VM=1");

const SNAKEOIL_VARS = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd";
const SNAKEOIL_KEY = "/usr/share/ovmf/PkKek-1-snakeoil.key";
const SNAKEOIL_CERT = "/usr/share/ovmf/PkKek-1-snakeoil.pem";
const CMDLINE = "console=ttyS0 airroot.rescue=poweroff airroot.ip=none";
const BUN = join(REPO, "node_modules/.bin/bun");
/** Per boot: up to 15 min for the machine-wide QEMU lock, then at most 150 s of boot. */
const BOOT_TIMEOUT_MS = 900_000 + 150_000;

function sh(args: string[], env: Record<string, string> = {}): string {
  const r = Bun.spawnSync(args, { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...env }, timeout: 300_000 });
  if (r.exitCode !== 0) throw new Error(`${args.join(" ")}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}
const cli = (args: string[]) => sh([BUN, join(REPO, "src/cli/main.ts"), ...args]);

/** A FAT disk with `efi` as the removable-media boot loader \EFI\BOOT\BOOTX64.EFI. */
function espDisk(efi: string, out: string): string {
  const env = { MTOOLS_SKIP_CHECK: "1" };
  const kib = Math.ceil(readFileSync(efi).length / 1024 * 1.1) + 2048;
  sh(["mkfs.fat", "-C", "--invariant", "-n", "UKI", out, String(kib)], env);
  sh(["mmd", "-i", out, "::/EFI", "::/EFI/BOOT"], env);
  sh(["mcopy", "-i", out, efi, "::/EFI/BOOT/BOOTX64.EFI"], env);
  return out;
}

describe.skipIf(SKIP)("signed UKI under OVMF Secure Boot (site key = Debian's snakeoil key enrolled in the vars): accepted; a one-byte change to .initrd, an unsigned copy and another signer refused by the firmware", () => {
  let dir = "", uki = "", cmdlineWant = "";

  beforeAll(() => {
    dir = scratchDir("airroot-e2e-uki-");
    const key = join(dir, "db.key");
    sh(["openssl", "pkey", "-in", SNAKEOIL_KEY, "-passin", "pass:snakeoil", "-out", key]);
    const state = join(dir, "state"), site = join(dir, "site");
    cli(["serve", "init", "--state", state, "--address", "10.0.2.100"]);
    cli(["serve", "site-config", "--state", state, "--out", site]);
    const kdir = kernelDir();
    const stage1 = buildTestStage1(join(dir, "stage1.zst"), kdir);
    // The full initramfs is only recorded (size, SHA-256): this boot stops before the first stage would fetch it.
    writeFileSync(join(dir, "full.cpio"), "070701");
    sh(["zstd", "-q", "-f", join(dir, "full.cpio"), "-o", join(dir, "full.zst")]);
    uki = join(dir, "airroot.efi");
    const made = cli(["media", "uki", "--key", key, "--cert", SNAKEOIL_CERT, "--site", site, "--kernel", join(kdir, "vmlinuz"),
      "--initrd", join(dir, "full.zst"), "--stage1", stage1, "--cmdline", CMDLINE, "--out", uki]);
    expect(made).toMatch(/signed by .*O=SnakeOil/);
    cmdlineWant = `${CMDLINE} airroot.server=https://10.0.2.100`;
    console.log(`UKI: ${readFileSync(uki).length} bytes`);
  }, 600_000);

  afterAll(() => removeScratchDirs());

  /** Boots `efi` from a FAT disk under Secure Boot until `done` matches the console (or QEMU exits), at most limitMs. */
  async function boot(name: string, efi: string, done: RegExp, limitMs: number, graceMs = 0): Promise<{ out: string; s: number; exited: boolean }> {
    const disk = espDisk(efi, join(dir, `${name}.img`));
    const vars = join(dir, `OVMF_VARS-${name}.fd`);
    copyFileSync(SNAKEOIL_VARS, vars);
    const lock = await qemuLock();
    const t0 = Date.now();
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024", "-nographic", "-no-reboot",
      "-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
      "-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE_SECBOOT}`, "-drive", `if=pflash,format=raw,unit=1,file=${vars}`,
      "-drive", `if=virtio,file=${disk},format=raw,readonly=on`,
      "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,romfile="],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    try {
      const deadline = Date.now() + limitMs;
      while (!done.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(250);
      const s = (Date.now() - t0) / 1000;
      if (done.test(box.out) && graceMs) await Bun.sleep(graceMs);
      const exited = vm.exitCode !== null;
      if (exited) await Bun.sleep(200); // the last console bytes
      return { out: box.out.replace(/\x1b\[[0-9;=?]*[A-Za-z]/g, ""), s, exited };
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await lock.release();
      try { writeFileSync(join(E2E_CACHE, `uki-${name}.console`), box.out); } catch {}
    }
  }

  /** The firmware refused the disk's loader: "Access Denied", then 10 s more (it goes on to PXE) with no Linux line. */
  async function expectRefused(name: string, efi: string) {
    const denied = /BdsDxe: failed to load Boot\d{4} "[^"]*" from PciRoot\(0x0\)\/Pci\([^\n]*: Access Denied/;
    const r = await boot(name, efi, denied, 120_000, 10_000);
    if (!denied.test(r.out)) throw new Error(`${name}: no "Access Denied" from the firmware within 120 s; console:\n${r.out}`);
    // Had the firmware run the image, the stub ("EFI stub: ...") and the kernel would have printed within those 10 s.
    expect(r.out).not.toMatch(/EFI stub:|Linux version|Kernel command line|airroot media:/);
    console.log(`${name}: refused by the firmware ("Access Denied") ${r.s.toFixed(0)} s after QEMU started`);
  }

  test("the signed UKI: the firmware runs it with Secure Boot on; the kernel says so and runs the first stage with the signed command line", async () => {
    const r = await boot("signed", uki, /reboot: Power down/, 150_000);
    if (!/reboot: Power down/.test(r.out)) throw new Error(`the signed UKI did not boot to the first stage's poweroff within 150 s; console:\n${r.out}`);
    const at = (re: RegExp) => r.out.search(re);
    expect(at(/EFI stub: UEFI Secure Boot is enabled\./)).toBeGreaterThan(-1);
    expect(at(/Linux version 6\.\d+/)).toBeGreaterThan(at(/EFI stub: UEFI Secure Boot is enabled/));
    expect(at(/secureboot: Secure boot enabled/)).toBeGreaterThan(at(/Linux version/));
    expect(at(/Kernel is locked down from EFI Secure Boot/)).toBeGreaterThan(-1);
    expect(r.out).toContain(`Kernel command line: ${cmdlineWant}\n`);
    // The db certificate the firmware checked the image against is the one the test signed with.
    expect(r.out).toMatch(/integrity: Loaded X\.509 cert 'SnakeOil: /);
    expect(at(/airroot media: first stage: fetching the airroot initramfs \(\d+ bytes, sha256 [0-9a-f]{64}\)/)).toBeGreaterThan(at(/Run \/init as init process/));
    expect(at(/airroot media: FAILED: airroot\.ip=none/)).toBeGreaterThan(at(/first stage: fetching/));
    expect(at(/airroot media: powering off \(airroot\.rescue=poweroff\)/)).toBeGreaterThan(at(/FAILED/));
    console.log(`signed UKI: first stage ran, powered off ${r.s.toFixed(0)} s after QEMU started`);
  }, BOOT_TIMEOUT_MS);

  test("one byte changed inside .initrd: the firmware refuses it (Access Denied), no Linux line", async () => {
    const b = readFileSync(uki);
    const sec = parsePe(b).sections.find((s) => s.name === ".initrd")!;
    const at = sec.rawPtr + Math.floor(sec.virtualSize / 2);
    b[at] ^= 0x01;
    const tampered = join(dir, "tampered.efi");
    writeFileSync(tampered, b);
    expect(Bun.spawnSync(["sbverify", "--cert", SNAKEOIL_CERT, tampered], { stdout: "pipe", stderr: "pipe" }).exitCode).not.toBe(0);
    await expectRefused("tampered", tampered);
  }, BOOT_TIMEOUT_MS);

  test("the same UKI unsigned (signature removed): refused", async () => {
    const unsigned = join(dir, "unsigned.efi");
    copyFileSync(uki, unsigned);
    sh(["sbattach", "--remove", unsigned]);
    expect(peSigners(unsigned)).toEqual([]);
    expect(peSigners(uki)).toEqual(["/C=US/ST=Colorado/L=Fort Collins/O=SnakeOil"]);
    await expectRefused("unsigned", unsigned);
  }, BOOT_TIMEOUT_MS);

  test("the same inputs signed with a key the firmware's db does not hold: refused", async () => {
    const k = join(dir, "other.key"), c = join(dir, "other.pem");
    sh(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k, "-out", c, "-days", "30", "-subj", "/CN=not the site key"]);
    const other = join(dir, "other.efi");
    cli(["media", "uki", "--key", k, "--cert", c, "--site", join(dir, "site"), "--kernel", join(kernelDir(), "vmlinuz"),
      "--initrd", join(dir, "full.zst"), "--stage1", join(dir, "stage1.zst"), "--cmdline", CMDLINE, "--out", other]);
    expect(peSigners(other)).toEqual(["/CN=not the site key"]);
    await expectRefused("other-key", other);
  }, BOOT_TIMEOUT_MS);
});
