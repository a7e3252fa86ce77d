// Boot media in QEMU (TCG), from power-on to systemd: one ISO made by `airroot media iso` (two stages: kernel + the
// small first stage + the site cpio on the media) boots as a CD under SeaBIOS, as a USB disk under SeaBIOS (the same
// file, through GRUB's hybrid MBR), and as a CD under OVMF (UEFI). Each time GRUB boots the baked-in command line,
// the first stage fetches the full initramfs from `airroot serve`'s /boot/initramfs over HTTPS (site CA) and checks
// it against the digest on the media, then airroot init enrolls the armed node, mounts the Debian image on demand
// and switches into systemd: checked as the systemd e2e checks it (enrolled, overlay root, ssh on 22 and 2222 with
// host certificates from the SSH CA). Then the same media built with --secure-boot under UEFI with Secure Boot
// enforcing (Debian's signed shim, GRUB and kernel; lockdown). Last, the FAT image (`media img`) as a disk under OVMF
// up to airroot's enrolment. A node per boot (n001..n005), each with a fresh TPM.
// User networking with restrict=on; the guest's 10.0.2.100:443 goes to airroot serve on loopback. One VM at a time
// (/tmp/airroot-qemu.lock).
// Set AIRROOT_SKIP_VM=1 to skip (never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { Subprocess } from "bun";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, E2E_CACHE, kernelDir, privateAirroot } from "../helpers/boot";
import { debianImage } from "../helpers/debian-image";
import { freePort, waitForPort } from "../helpers/ports";
import { certifiedSsh, collectConsole, qemuLock, startQemuTpm, tpmArgs } from "../helpers/vm-node";
import { buildTestStage1, mediaMachineArgs, OVMF_CODE, OVMF_VARS, type MediaBoot } from "../helpers/media";
import { readConfig, statePaths, writeConfig } from "../../src/server/state";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/media.test.ts: skipped because AIRROOT_SKIP_VM=1");

const SERVER_IP = "10.0.2.100";
const CMDLINE = "console=ttyS0 quiet airroot.rescue=poweroff";
/** Per boot: up to 15 min waiting for the machine-wide QEMU lock (other VM tests), then up to 6 min of boot and checks. */
const BOOT_TIMEOUT_MS = 900_000 + 360_000;

function sh(args: string[]): string {
  const r = Bun.spawnSync(args, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${args.join(" ")}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

describe.skipIf(SKIP)("boot media: one hybrid ISO booted as a BIOS CD, a BIOS USB disk, a UEFI CD, and with Secure Boot, into systemd; the FAT image under UEFI", () => {
  let dir = "", key = "", state = "", airroot = "", iso = "", sbIso = "", img = "", fullSha = "";
  let server: Subprocess | undefined;
  let httpsPort = 0;
  const node = (...args: string[]) => sh([airroot, "node", ...args, "--state", state]);

  beforeAll(async () => {
    dir = scratchDir("airroot-e2e-media-");
    const image = debianImage();
    airroot = privateAirroot();
    state = join(dir, "state");
    key = join(dir, "id");
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key]);
    sh([airroot, "serve", "init", "--state", state, "--address", SERVER_IP]);
    writeConfig(state, { ...readConfig(state), rootAuthorizedKeys: [readFileSync(`${key}.pub`, "utf8").trim()] });
    const tree = join(dir, "tree");
    sh(["unsquashfs", "-q", "-n", "-d", tree, image]);
    sh([airroot, "image", "pack", tree, "--state", state, "--profile", "compute"]);
    rmSync(tree, { recursive: true, force: true });
    for (let i = 1; i <= 5; i++) node("add", `n00${i}`, "--mac", `52:54:00:12:34:5${i}`, "--profile", "compute");
    const site = join(dir, "site");
    sh([airroot, "serve", "site-config", "--state", state, "--out", site]);
    const kdir = kernelDir();
    const full = buildTestInitramfs(join(dir, "initrd.zst"), [], kdir, site);
    fullSha = new Bun.CryptoHasher("sha256").update(readFileSync(full)).digest("hex");
    const stage1 = buildTestStage1(join(dir, "stage1.zst"), kdir);
    sh([airroot, "serve", "boot-files", "--state", state, "--kernel", join(kdir, "vmlinuz"), "--initrd", full]);
    iso = join(dir, "airroot.iso");
    const made = sh([airroot, "media", "iso", "--site", site, "--kernel", join(kdir, "vmlinuz"), "--initrd", full, "--stage1", stage1,
      "--cmdline", CMDLINE, "--out", iso]);
    expect(made).toContain(`first stage fetches /boot/initramfs (`);
    // The same media with Debian's signed shim + GRUB on its ESP, for the Secure Boot boot.
    sbIso = join(dir, "airroot-sb.iso");
    sh([airroot, "media", "iso", "--site", site, "--kernel", join(kdir, "vmlinuz"), "--initrd", full, "--stage1", stage1,
      "--cmdline", `${CMDLINE} airroot.modules=efivarfs`, "--secure-boot", "--out", sbIso]);
    // The FAT image UEFI HTTP boot mounts (one stage: the full initramfs in it).
    img = join(dir, "boot.img");
    sh([airroot, "media", "img", "--site", site, "--kernel", join(kdir, "vmlinuz"), "--initrd", full, "--cmdline", CMDLINE, "--out", img]);

    httpsPort = await freePort();
    server = Bun.spawn([airroot, "serve", "--state", state, "--listen", `127.0.0.1:${httpsPort}`, "--no-discovery"], { stdout: "ignore", stderr: "pipe" });
    await waitForPort("127.0.0.1", httpsPort, 30_000);
  }, 600_000);

  afterAll(async () => {
    server?.kill("SIGTERM");
    await Promise.race([server?.exited, Bun.sleep(5000)]);
    server?.kill("SIGKILL");
    removeScratchDirs();
  });

  async function bootToSystemd(how: MediaBoot, name: string, mac: string, media = iso): Promise<string> {
    node("arm", name, "--once");
    const lock = await qemuLock();
    const tpm = await startQemuTpm(join(dir, how));
    const p22 = await freePort(), p2222 = await freePort();
    const netdev = ["user,id=n0,restrict=on", `hostfwd=tcp:127.0.0.1:${p22}-:22`, `hostfwd=tcp:127.0.0.1:${p2222}-:2222`,
      `guestfwd=tcp:${SERVER_IP}:443-cmd:nc 127.0.0.1 ${httpsPort}`].join(",");
    const t0 = Date.now();
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-nographic", "-no-reboot",
      ...mediaMachineArgs(how, media, dir), ...tpmArgs(tpm.sock), "-netdev", netdev, "-device", `virtio-net-pci,netdev=n0,mac=${mac},romfile=`],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    const ssh = certifiedSsh(dir, readFileSync(statePaths(state).sshCaPub, "utf8"), key, name);
    try {
      const deadline = Date.now() + 540_000; // trixie under TCG on 2 shared cores: 260-300 s seen with three guests at once
      while (!/login:/.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!/login:/.test(box.out)) throw new Error(`no login prompt on the serial console; console:\n${box.out}`);
      const loginS = ((Date.now() - t0) / 1000).toFixed(0);
      const at = (re: RegExp) => box.out.search(re);
      // Firmware -> GRUB from the media -> the baked-in entry -> first stage -> verified second stage -> airroot.
      expect(at(/GNU GRUB/)).toBeGreaterThan(-1);
      expect(at(/airroot: loading \/boot\/vmlinuz and \/boot\/stage1\.img \/boot\/site\.cpio/)).toBeGreaterThan(at(/GNU GRUB/));
      expect(at(new RegExp(`airroot media: first stage: fetching the airroot initramfs \\(\\d+ bytes, sha256 ${fullSha}\\)`))).toBeGreaterThan(-1);
      expect(at(/airroot media: fetched https:\/\/10\.0\.2\.100\/boot\/initramfs in [\d.]+ s, sha256 verified/)).toBeGreaterThan(-1);
      const unpack = /airroot media: unpacked in ([\d.]+) s; starting airroot/.exec(box.out);
      expect(unpack).not.toBeNull();
      expect(at(new RegExp(`Enrolled as ${name} via https://10\\.0\\.2\\.100 \\(credential sealed in the TPM\\)`))).toBeGreaterThan(at(/starting airroot/));
      expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: .* \(on demand from 1 server/)).toBeGreaterThan(at(/Enrolled as/));
      expect(at(/Switching root to \/sysroot/)).toBeGreaterThan(at(/Mounting the root filesystem/));

      let ok = false, last = "";
      for (let i = 0; i < 20 && !ok; i++) {
        const r = await ssh(p22, "true", 20_000);
        ok = r.code === 0; last = r.err;
        if (!ok) await Bun.sleep(2000);
      }
      if (!ok) throw new Error(`ssh on 22 with the host certificate failed: ${last}`);
      const os = await ssh(p22, "grep ' / ' /proc/mounts; hostname; cat /proc/cmdline; ls -d /sys/firmware/efi 2>/dev/null || echo no-efi");
      expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper/m);
      expect(os.out).toMatch(new RegExp(`^${name}$`, "m"));
      // The command line baked into the media: ours, then the site's server.
      expect(os.out).toMatch(/^BOOT_IMAGE=\/boot\/vmlinuz console=ttyS0 quiet airroot\.rescue=poweroff( airroot\.modules=efivarfs)? airroot\.server=https:\/\/10\.0\.2\.100$/m);
      expect(os.out).toMatch(how.startsWith("uefi") ? /^\/sys\/firmware\/efi$/m : /^no-efi$/m);
      const initramfs = await ssh(p2222, "grep ' / ' /proc/mounts");
      expect(initramfs.code).toBe(0);
      expect(initramfs.out).toMatch(/^rootfs \/ rootfs /m);
      console.log(`${how}: login prompt ${loginS} s after QEMU started; second stage unpacked in ${unpack![1]} s (TCG)`);
      // What the Secure Boot test checks: the firmware's SecureBoot variable, lockdown, the NIC module loaded.
      const sb = await ssh(p22, "dmesg | grep -o 'secureboot: Secure boot enabled'; " +
        "mountpoint -q /sys/firmware/efi/efivars || mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null; " +
        "od -An -t u1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{print \"SecureBoot=\" $NF}'; " +
        "cat /sys/kernel/security/lockdown; grep -o '^virtio_net ' /proc/modules");
      return sb.out + sb.err;
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await tpm.stop();
      await lock.release();
      try { writeFileSync(join(E2E_CACHE, `media-${how}.console`), box.out); } catch {}
    }
  }

  test("BIOS (SeaBIOS), the ISO as a CD: El Torito -> GRUB -> first stage -> systemd", () => bootToSystemd("bios-cd", "n001", "52:54:00:12:34:51"), BOOT_TIMEOUT_MS);
  test("BIOS (SeaBIOS), the same file as a USB disk: hybrid MBR -> GRUB -> first stage -> systemd", () => bootToSystemd("bios-usb", "n002", "52:54:00:12:34:52"), BOOT_TIMEOUT_MS);
  test("UEFI (OVMF), the ISO as a CD: El Torito EFI image -> GRUB -> first stage -> systemd", () => bootToSystemd("uefi-cd", "n003", "52:54:00:12:34:53"), BOOT_TIMEOUT_MS);
  test("UEFI with Secure Boot enforcing (OVMF secboot + Microsoft keys, q35 SMM), --secure-boot media: signed shim -> signed GRUB -> Debian's signed kernel in lockdown loads the signed modules -> systemd", async () => {
    const out = await bootToSystemd("uefi-secureboot-cd", "n004", "52:54:00:12:34:54", sbIso);
    expect(out).toMatch(/^secureboot: Secure boot enabled$/m);
    expect(out).toMatch(/^SecureBoot=1$/m); // the firmware's variable, as the node sees it
    expect(out).toMatch(/\[(integrity|confidentiality)\]/);
    expect(out).toMatch(/^virtio_net $/m);
  }, BOOT_TIMEOUT_MS);

  /**
   * Boots `media` the way `how` says (no TPM: these boots stop before enrollment) until `want` is on the console, then
   * runs `check` on it; the console is kept as media-NAME.console.
   */
  async function bootUntil(how: MediaBoot, media: string, mac: string, want: RegExp, name: string, check: (out: string) => void): Promise<void> {
    const lock = await qemuLock();
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-nographic", "-no-reboot",
      ...mediaMachineArgs(how, media, dir),
      "-netdev", `user,id=n0,restrict=on,guestfwd=tcp:${SERVER_IP}:443-cmd:nc 127.0.0.1 ${httpsPort}`, "-device", `virtio-net-pci,netdev=n0,mac=${mac},romfile=`],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    try {
      const deadline = Date.now() + 300_000;
      while (!want.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!want.test(box.out)) throw new Error(`${name}: no ${want} on the console; console:\n${box.out}`);
      check(box.out);
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await lock.release();
      try { writeFileSync(join(E2E_CACHE, `media-${name}.console`), box.out); } catch {}
    }
  }

  test("UEFI (OVMF), the same ISO as a USB disk: the ESP in its GPT -> GRUB -> first stage -> verified initramfs -> airroot starts", async () => {
    // The BIOS USB and UEFI CD boots above already go on to systemd; this one checks the firmware's way onto the
    // disk form (GPT + ESP), as far as airroot starting from the verified second stage.
    await bootUntil("uefi-usb", iso, "52:54:00:12:34:56", /airroot media: unpacked in [\d.]+ s; starting airroot/, "uefi-usb", (out) => {
      const at = (re: RegExp) => out.search(re);
      expect(at(/BdsDxe: starting Boot\d+ "UEFI QEMU QEMU USB HARDDRIVE .* from .*\/USB\(/)).toBeGreaterThan(-1); // the disk, not a CD
      expect(at(/airroot: loading \/boot\/vmlinuz and \/boot\/stage1\.img \/boot\/site\.cpio/)).toBeGreaterThan(at(/BdsDxe: starting/));
      expect(at(/airroot media: fetched https:\/\/10\.0\.2\.100\/boot\/initramfs in [\d.]+ s, sha256 verified/)).toBeGreaterThan(at(/airroot: loading/));
    });
  }, BOOT_TIMEOUT_MS);

  test("a node's media (--node: its static address baked in) built for another initramfs: the first stage configures airroot.ip and refuses the server's initramfs by its digest", async () => {
    node("add", "n006", "--mac", "52:54:00:12:34:57", "--profile", "compute", "--ip", "10.0.2.60/24", "--gateway", "10.0.2.2");
    // The record on this media is of another initramfs than the one the server has: the first stage must use none of it.
    const other = join(dir, "other-initrd.zst");
    writeFileSync(other, Buffer.concat([readFileSync(join(dir, "initrd.zst")), Buffer.from("not the installed initramfs\n")]));
    const otherSha = new Bun.CryptoHasher("sha256").update(readFileSync(other)).digest("hex");
    const nodeIso = join(dir, "n006.iso");
    const made = sh([airroot, "media", "iso", "--site", join(dir, "site"), "--node", "n006", "--state", state, "--kernel", join(kernelDir(), "vmlinuz"),
      "--initrd", other, "--stage1", join(dir, "stage1.zst"), "--cmdline", CMDLINE, "--out", nodeIso]);
    expect(made).toContain("airroot.ip=eth0:10.0.2.60/24:10.0.2.2");
    await bootUntil("bios-cd", nodeIso, "52:54:00:12:34:57", /airroot media: retrying in 5 s/, "node-wrong-digest", (out) => {
      const at = (re: RegExp) => out.search(re);
      // No DHCP here: the address is the node's record, from the media's command line.
      expect(at(/airroot media: network: eth0 10\.0\.2\.60\/24 via 10\.0\.2\.2 \(airroot\.ip\)/)).toBeGreaterThan(-1);
      expect(at(new RegExp(`airroot media: https://10\\.0\\.2\\.100/boot/initramfs: sha256 ${fullSha}, \\d+ bytes: not the initramfs this media was built for \\(sha256 ${otherSha}`)))
        .toBeGreaterThan(at(/network: eth0/));
      expect(out).not.toMatch(/sha256 verified|starting airroot|Enrolled as/);
    });
  }, BOOT_TIMEOUT_MS);

  test("UEFI (OVMF), the FAT image (media img, one stage) as a disk: BOOTX64.EFI -> GRUB -> the full initramfs -> airroot enrolls", async () => {
    node("arm", "n005", "--once");
    const lock = await qemuLock();
    const tpm = await startQemuTpm(join(dir, "img"));
    const vars = join(dir, "OVMF_VARS-img.fd");
    copyFileSync(OVMF_VARS, vars);
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-nographic", "-no-reboot", "-machine", "q35",
      "-drive", `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`, "-drive", `if=pflash,format=raw,unit=1,file=${vars}`,
      "-drive", `if=virtio,file=${img},format=raw,readonly=on`, ...tpmArgs(tpm.sock),
      "-netdev", `user,id=n0,restrict=on,guestfwd=tcp:${SERVER_IP}:443-cmd:nc 127.0.0.1 ${httpsPort}`, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:55,romfile="],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    try {
      const want = /Enrolled as n005 via https:\/\/10\.0\.2\.100 \(credential sealed in the TPM\)/;
      const deadline = Date.now() + 360_000;
      while (!want.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!want.test(box.out)) throw new Error(`airroot did not enroll n005 from the FAT image; console:\n${box.out}`);
      expect(box.out).toMatch(/airroot: loading \/boot\/vmlinuz and \/boot\/initramfs\.img \/boot\/site\.cpio/);
      expect(box.out).not.toMatch(/airroot media: first stage/);
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await tpm.stop();
      await lock.release();
      try { writeFileSync(join(E2E_CACHE, "media-uefi-img.console"), box.out); } catch {}
    }
  }, BOOT_TIMEOUT_MS);
});
