// BIOS PXE in QEMU (TCG): SeaBIOS and QEMU's own iPXE option ROM (Debian's ipxe-qemu, virtio-net) take the boot file
// URL from slirp's DHCP (bootfile=http://10.0.2.100/boot/ipxe), fetch `airroot serve`'s generic iPXE script over
// plain HTTP, chain to the per-node script for the NIC's MAC, load the kernel and initramfs (installed with `airroot
// serve boot-files`) over HTTP and boot them with the node's command line: airroot init enrolls the armed node,
// mounts the Debian image on demand over HTTPS and switches into systemd. Checked as the systemd e2e checks it:
// enrolled, overlay root, ssh on 22 and 2222 with host certificates from the SSH CA, the boot reported running.
// No -kernel/-initrd: the only way into the guest is the network boot. User networking with restrict=on; the
// guest's 10.0.2.100:80 and :443 are forwarded to airroot serve on loopback. One VM at a time (/tmp/airroot-qemu.lock).
// Set AIRROOT_SKIP_VM=1 to skip (never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync, rmSync } from "node:fs";
import type { Subprocess } from "bun";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, E2E_CACHE, kernelDir, privateAirroot } from "../helpers/boot";
import { debianImage } from "../helpers/debian-image";
import { freePort, waitForPort } from "../helpers/ports";
import { certifiedSsh, collectConsole, qemuLock, startQemuTpm, tpmArgs } from "../helpers/vm-node";
import { readConfig, statePaths, writeConfig } from "../../src/server/state";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/pxe.test.ts: skipped because AIRROOT_SKIP_VM=1");

const MAC = "52:54:00:12:34:56";
const SERVER_IP = "10.0.2.100";

function sh(args: string[]): string {
  const r = Bun.spawnSync(args, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${args.join(" ")}: ${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

describe.skipIf(SKIP)("BIOS PXE: SeaBIOS + QEMU's iPXE ROM -> airroot serve's iPXE script -> kernel + initramfs over HTTP -> systemd", () => {
  let dir = "", key = "", state = "", airroot = "";
  let server: Subprocess | undefined;
  let httpsPort = 0, httpPort = 0;
  const node = (...args: string[]) => sh([airroot, "node", ...args, "--state", state]);

  beforeAll(async () => {
    dir = scratchDir("airroot-e2e-pxe-");
    const image = debianImage();
    airroot = privateAirroot();
    state = join(dir, "state");
    key = join(dir, "id");
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key]);
    sh([airroot, "serve", "init", "--state", state, "--address", SERVER_IP]);
    writeConfig(state, { ...readConfig(state), rootAuthorizedKeys: [readFileSync(`${key}.pub`, "utf8").trim()] });
    sh([airroot, "serve", "config", "set", "http-port", "80", "--state", state]);
    sh([airroot, "serve", "config", "set", "boot-cmdline", "console=ttyS0 quiet airroot.rescue=poweroff", "--state", state]);
    const tree = join(dir, "tree");
    sh(["unsquashfs", "-q", "-n", "-d", tree, image]);
    sh([airroot, "image", "pack", tree, "--state", state, "--profile", "compute"]);
    rmSync(tree, { recursive: true, force: true });
    node("add", "n001", "--mac", MAC, "--profile", "compute");
    node("arm", "n001", "--once");
    sh([airroot, "serve", "site-config", "--state", state, "--out", join(dir, "site")]);
    const kdir = kernelDir();
    const initrd = buildTestInitramfs(join(dir, "initrd.zst"), [], kdir, join(dir, "site"));
    const installed = sh([airroot, "serve", "boot-files", "--state", state, "--kernel", join(kdir, "vmlinuz"), "--initrd", initrd]);
    expect(installed).toMatch(/installed vmlinuz \([\d.]+ MiB\)/);
    expect(installed).toMatch(/installed undionly\.kpxe/);

    httpsPort = await freePort();
    httpPort = await freePort();
    server = Bun.spawn([airroot, "serve", "--state", state, "--listen", `127.0.0.1:${httpsPort}`, "--http-listen", `127.0.0.1:${httpPort}`, "--no-discovery"],
      { stdout: "ignore", stderr: "pipe" });
    await waitForPort("127.0.0.1", httpPort, 30_000);
  }, 600_000);

  afterAll(async () => {
    server?.kill("SIGTERM");
    await Promise.race([server?.exited, Bun.sleep(5000)]);
    server?.kill("SIGKILL");
    removeScratchDirs();
  });

  test("power-on to systemd through the network boot: enrolled, overlay root, certified ssh on 22 and 2222, reported running", async () => {
    const lock = await qemuLock();
    const tpm = await startQemuTpm(dir);
    const p22 = await freePort(), p2222 = await freePort();
    const netdev = [`user,id=n0,restrict=on,bootfile=http://${SERVER_IP}/boot/ipxe`,
      `hostfwd=tcp:127.0.0.1:${p22}-:22`, `hostfwd=tcp:127.0.0.1:${p2222}-:2222`,
      `guestfwd=tcp:${SERVER_IP}:80-cmd:nc 127.0.0.1 ${httpPort}`, `guestfwd=tcp:${SERVER_IP}:443-cmd:nc 127.0.0.1 ${httpsPort}`].join(",");
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1536", "-nographic", "-no-reboot",
      "-boot", "n", ...tpmArgs(tpm.sock), "-netdev", netdev, "-device", `virtio-net-pci,netdev=n0,mac=${MAC}`],
    { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    const ssh = certifiedSsh(dir, readFileSync(statePaths(state).sshCaPub, "utf8"), key, "n001");
    try {
      const deadline = Date.now() + 420_000;
      while (!/login:/.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      if (!/login:/.test(box.out)) throw new Error(`no login prompt on the serial console; console:\n${box.out}`);
      // The network boot: the generic script, then the per-node one (audited), no other way in.
      const audit = readFileSync(statePaths(state).audit, "utf8");
      expect(audit).toMatch(/"event":"boot-script","outcome":"ok","remote":"127\.0\.0\.1","node":"n001","reason":"per-node iPXE script over http, MAC 52:54:00:12:34:56"/);
      const at = (re: RegExp) => box.out.search(re);
      // On the console: QEMU's iPXE took the URL from DHCP, ran the generic script, then the per-node one.
      expect(at(/Filename: http:\/\/10\.0\.2\.100\/boot\/ipxe\n/)).toBeGreaterThan(-1);
      expect(at(/airroot: booting n001 from http:\/\/10\.0\.2\.100\n/)).toBeGreaterThan(at(/Filename: /));
      // iPXE may print progress first ("97%" and backspaces) when the transfer takes long enough.
      expect(at(/http:\/\/10\.0\.2\.100\/boot\/vmlinuz\.\.\.[^\n]* ok/)).toBeGreaterThan(at(/airroot: booting n001/));
      expect(at(/http:\/\/10\.0\.2\.100\/boot\/initramfs\.\.\.[^\n]* ok/)).toBeGreaterThan(at(/boot\/vmlinuz\.\.\.[^\n]* ok/));
      expect(at(/Enrolled as n001 via https:\/\/10\.0\.2\.100 \(credential sealed in the TPM\)/)).toBeGreaterThan(-1);
      expect(at(/Mounting the root filesystem\.\.\.overlay on \/sysroot: .* \(on demand from 1 server/)).toBeGreaterThan(at(/Enrolled as/));
      expect(at(/Switching root to \/sysroot/)).toBeGreaterThan(at(/Mounting the root filesystem/));

      let ok = false, last = "";
      for (let i = 0; i < 20 && !ok; i++) {
        const r = await ssh(p22, "true", 20_000);
        ok = r.code === 0; last = r.err;
        if (!ok) await Bun.sleep(2000);
      }
      if (!ok) throw new Error(`ssh on 22 with the host certificate failed: ${last}`);
      const os = await ssh(p22, "grep ' / ' /proc/mounts; systemctl is-system-running --wait; hostname; cat /proc/cmdline");
      expect(os.out).toMatch(/^airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper/m);
      expect(os.out).toMatch(/^(running|degraded)$/m);
      expect(os.out).toMatch(/^n001$/m);
      // The command line is the per-node script's: site parameters and the server, nothing from the firmware.
      expect(os.out).toMatch(/^initrd=initramfs console=ttyS0 quiet airroot\.rescue=poweroff airroot\.server=https:\/\/10\.0\.2\.100$/m);
      const initramfs = await ssh(p2222, "grep ' / ' /proc/mounts");
      expect(initramfs.code).toBe(0);
      expect(initramfs.out).toMatch(/^rootfs \/ rootfs /m);

      let list = "";
      for (let i = 0; i < 60 && !/n001.*running/.test(list); i++) { list = node("list"); if (!/n001.*running/.test(list)) await Bun.sleep(1000); }
      expect(list).toMatch(/n001.*running \(/);

      await ssh(p22, "systemctl poweroff", 20_000);
      const code = await Promise.race([vm.exited, Bun.sleep(120_000).then(() => "still running")]);
      if (code !== 0) throw new Error(`poweroff did not finish (${code}); console tail:\n${box.out.slice(-3000)}`);
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await tpm.stop();
      await lock.release();
      try { require("node:fs").writeFileSync(join(E2E_CACHE, "pxe-bios.console"), box.out); } catch {}
    }
  }, 720_000);

  test("a machine whose MAC is not registered is told so on its console and handed back to the firmware", async () => {
    const lock = await qemuLock();
    const netdev = [`user,id=n0,restrict=on,bootfile=http://${SERVER_IP}/boot/ipxe`, `guestfwd=tcp:${SERVER_IP}:80-cmd:nc 127.0.0.1 ${httpPort}`].join(",");
    const vm = Bun.spawn(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "256", "-nographic", "-no-reboot",
      "-boot", "n", "-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:aa:bb:cc"], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
    const box = collectConsole(vm);
    try {
      const deadline = Date.now() + 120_000;
      const want = /airroot: handing back to the firmware in 30 s/;
      while (!want.test(box.out) && Date.now() < deadline && vm.exitCode === null) await Bun.sleep(500);
      const unwrapped = box.out.replace(/\n/g, ""); // iPXE wraps its console at 80 columns
      expect(unwrapped).toContain("airroot: no node is registered with the MAC 52:54:00:aa:bb:cc (the boot NIC of this machine)");
      expect(unwrapped).toContain("airroot: on the server: airroot node add NAME --mac 52:54:00:aa:bb:cc --profile PROFILE, then airroot node arm NAME");
      expect(box.out).toMatch(want);
      // ... and after the pause the firmware moves on (SeaBIOS: no other boot device here): no hang in iPXE.
      const back = /No bootable device|Boot failed/;
      const until = Date.now() + 90_000;
      while (!back.test(box.out) && Date.now() < until && vm.exitCode === null) await Bun.sleep(500);
      expect(box.out.slice(box.out.search(want))).toMatch(back);
      expect(box.out).not.toMatch(/boot\/vmlinuz\.\.\./);
      expect(readFileSync(statePaths(state).audit, "utf8")).toMatch(/"event":"boot-script","outcome":"refused","remote":"127\.0\.0\.1","reason":"no node with MAC 52:54:00:aa:bb:cc"/);
    } finally {
      vm.kill("SIGKILL");
      await vm.exited;
      await lock.release();
    }
  }, 300_000);
});
