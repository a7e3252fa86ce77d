// QEMU (TCG) boot of the Debian kernel with our initramfs: console autodetect, module loading, DHCP, debug sshd,
// overlay root from a squashfs, switch_root into the image's init; and the airroot.shell rescue shell on the console.
// Set AIRROOT_SKIP_VM=1 to skip (it is never skipped silently).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { copyFileSync, mkdirSync } from "node:fs";
import { freePort } from "../helpers/ports";
import { makeTestPki } from "../helpers/pki";
import { startNginx, type Nginx } from "../helpers/nginx";
import { removeScratchDirs, scratchDir } from "../helpers/tmp";
import { buildTestInitramfs, kernelDir, makeTestRootImage } from "../helpers/boot";
import { startVm as startQemu, type Vm } from "../helpers/qemu";

const SKIP = process.env.AIRROOT_SKIP_VM === "1";
if (SKIP) console.warn("test/e2e/boot.test.ts: skipped because AIRROOT_SKIP_VM=1");

let vmlinuz = "";
let initrd = "";
let clientKey = "";
let caCert = "";
let mirrors: Nginx[] = [];
/** Guest addresses of the two HTTPS mirrors, forwarded by QEMU (one nc per connection) to nginx on loopback. */
const MIRROR_IPS = ["10.0.2.100", "10.0.2.101"];
const DEAD_IP = "10.0.2.102";
let guestfwd = "";

/** Starts QEMU with the serial console on stdio and user networking with restrict=on (no way out of the VM). */
const startVm = (append: string, netdevExtra = ""): Vm => startQemu({ kernel: vmlinuz, initrd, append, netdevExtra });

describe.skipIf(SKIP)("QEMU boot", () => {
  beforeAll(async () => {
    const dir = scratchDir("airroot-e2e-");
    const kdir = kernelDir();
    vmlinuz = join(kdir, "vmlinuz");
    const img = makeTestRootImage(join(dir, "img"));
    // Site config with root's authorized key, as `airroot serve` will provide it.
    clientKey = join(dir, "id_ed25519");
    const kg = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", clientKey]);
    if (kg.exitCode !== 0) throw new Error("ssh-keygen failed");
    mkdirSync(join(dir, "site"));
    copyFileSync(`${clientKey}.pub`, join(dir, "site/authorized_keys"));
    const pki = makeTestPki(join(dir, "pki"), MIRROR_IPS);
    copyFileSync(pki.caCert, join(dir, "site/ca.pem"));
    caCert = pki.caCert;
    mkdirSync(join(dir, "www"));
    copyFileSync(img, join(dir, "www/root.sfs"));
    const ports = await Promise.all(MIRROR_IPS.map(() => freePort("127.0.0.1")));
    mirrors = await Promise.all(ports.map((port, i) => startNginx({ root: join(dir, "www"), listen: [{ host: "127.0.0.1", port }],
      cert: pki.serverCert, key: pki.serverKey, workDir: join(dir, `nginx${i}`) })));
    guestfwd = ports.map((p, i) => `,guestfwd=tcp:${MIRROR_IPS[i]}:443-cmd:nc 127.0.0.1 ${p}`).join("");
    // A dead server: forwarded to a loopback port where nothing listens.
    guestfwd += `,guestfwd=tcp:${DEAD_IP}:443-cmd:nc 127.0.0.1 ${await freePort("127.0.0.1")}`;
    initrd = buildTestInitramfs(join(dir, "initramfs.cpio.zst"), [[img, "images/root.sfs"]], kdir, join(dir, "site"));
  }, 300_000);

  afterAll(async () => {
    await Promise.all(mirrors.map((m) => m.stop()));
    removeScratchDirs();
  });

  /** The console lines every full boot prints, in order, up to the image's own init. */
  function expectBootLines(out: string, rootLine: RegExp): void {
    const order = [
      /\] Automatic console configured for ttyS0,115200/,
      /\] Initializing airroot diskless environment/,
      /\] Loading drivers\.\.\.done/,
      /\] Scanning for network configuration\.\.\.Setting up eth0 via DHCP at 10\.0\.2\.15\/24/,
      /\] Initializing ssh\.\.\.ssh-keygen: generating new host keys: RSA ECDSA ED25519; debug sshd on port 2222/,
      rootLine,
      /Switching root to \/sysroot and starting \/sbin\/init/,
      /AIRROOT-TEST-INIT: pid 1 args \[\]/,
      /AIRROOT-TEST-KERNEL: 6\./,
      /AIRROOT-TEST-ROOT: airroot \/ overlay rw,.*lowerdir=\/mnt\/remote,upperdir=\/mnt\/overlay\/upper,workdir=\/mnt\/overlay\/work/,
      /AIRROOT-TEST-WRITE: written/,
      /AIRROOT-TEST-IMAGE: squashfs-test-root/,
      /AIRROOT-TEST-SSHD: SSH-2\.0-OpenSSH/,
    ];
    let pos = 0;
    for (const re of order) {
      const i = out.slice(pos).search(re);
      if (i < 0) throw new Error(`console line ${re} missing or out of order; console:\n${out}`);
      pos += i;
    }
  }

  test("on-demand HTTPS root from two mirrors: console lines in order, the mount engine survives switch_root", async () => {
    // No console= : the serial console must be found by autodetection (QEMU's ttyS0 asserts carrier).
    const urls = MIRROR_IPS.map((ip) => `https://${ip}/root.sfs`).join(",");
    const vm = startVm(`quiet airroot.imageurl=${urls} airroot.rescue=poweroff`, guestfwd);
    try {
      await vm.waitFor(/AIRROOT-TEST-DONE/, 110_000);
      const out = vm.output();
      expectBootLines(out, /\] Mounting the root filesystem\.\.\.overlay on \/sysroot: \/mnt\/image\/root\.sfs via \/dev\/loop0, tmpfs 50% \(on demand from 2 servers, @airroot-root pid \d+\)/);
      // The daemon (argv0 '@airroot-root') and the debug sshd supervisor still run under the image's init.
      expect(out).toMatch(/AIRROOT-TEST-PS:\s+\d+\s+1 .*@airroot-root/);
      expect(out).toMatch(/AIRROOT-TEST-PS:\s+\d+\s+1 .*@airroot-sshd/);
      // What makes it look installed: the boot interface as a NetworkManager connection, matched by MAC.
      expect(out).toContain("AIRROOT-TEST-NM: mac-address=52:54:00:12:34:56 method=auto method=link-local");
      expect(out).toMatch(/AIRROOT-TEST-KERNEL: 6\.12\.\d+\+deb13-amd64/); // trixie's, the default node suite
      expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
    } finally {
      vm.kill();
    }
  }, 150_000);

  test("bookworm's kernel (make initramfs SUITE=bookworm, Linux 6.1) boots the same way", async () => {
    const kdir = kernelDir("bookworm");
    const dir = scratchDir("airroot-e2e-bookworm-");
    const img = makeTestRootImage(join(dir, "img"));
    const site = join(dir, "site");
    mkdirSync(site);
    copyFileSync(`${clientKey}.pub`, join(site, "authorized_keys"));
    copyFileSync(caCert, join(site, "ca.pem"));
    const bookwormInitrd = buildTestInitramfs(join(dir, "initramfs.cpio.zst"), [[img, "images/root.sfs"]], kdir, site);
    const urls = MIRROR_IPS.map((ip) => `https://${ip}/root.sfs`).join(",");
    const vm = startQemu({ kernel: join(kdir, "vmlinuz"), initrd: bookwormInitrd, append: `quiet airroot.imageurl=${urls} airroot.rescue=poweroff`, netdevExtra: guestfwd });
    try {
      await vm.waitFor(/AIRROOT-TEST-DONE/, 110_000);
      const out = vm.output();
      expectBootLines(out, /\] Mounting the root filesystem\.\.\.overlay on \/sysroot: \/mnt\/image\/root\.sfs via \/dev\/loop0, tmpfs 50% \(on demand from 2 servers, @airroot-root pid \d+\)/);
      expect(out).toMatch(/AIRROOT-TEST-KERNEL: 6\.1\.\d+-\d+-amd64/);
      expect(out).toMatch(/AIRROOT-TEST-PS:\s+\d+\s+1 .*@airroot-root/);
      expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
    } finally {
      vm.kill();
    }
  }, 240_000);

  test("airroot.imagemethod=copy downloads the image into RAM first, with progress, past a dead first server", async () => {
    const vm = startVm(`quiet airroot.imageurl=https://${DEAD_IP}/root.sfs,https://${MIRROR_IPS[1]}/root.sfs airroot.imagemethod=copy airroot.rescue=poweroff`, guestfwd);
    try {
      await vm.waitFor(/AIRROOT-TEST-DONE/, 110_000);
      const out = vm.output();
      expect(out).toMatch(/Downloading https:\/\/10\.0\.2\.101\/root\.sfs: 100%/);
      expectBootLines(out, /\] Mounting the root filesystem\.\.\.overlay on \/sysroot: \/var\/lib\/airroot\/root\.sfs via \/dev\/loop0, tmpfs 50% \(copied [\d.]+ MiB from https:\/\/10\.0\.2\.101\/root\.sfs\)/);
      expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
    } finally {
      vm.kill();
    }
  }, 150_000);

  test("a failing step ends in rescue: step and reason on the console, then a shell and the 2222 sshd", async () => {
    const port = await freePort("127.0.0.1");
    // sshd skipped so that rescue itself must start it; the root image is missing so the root step fails.
    const vm = startVm("quiet airroot.skip=sshd airroot.rootimage=/images/missing.sfs", `,hostfwd=tcp:127.0.0.1:${port}-:2222`);
    try {
      await vm.waitFor(/boot stopped at step "root" \(Mounting the root filesystem\): root image \/images\/missing\.sfs does not exist/, 110_000);
      await vm.waitFor(/starting a console shell on \/dev\/ttyS0; the debug sshd listens on port 2222/, 30_000);
      const ssh = Bun.spawn(["ssh", "-p", String(port), "-i", clientKey, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20", "root@127.0.0.1", "echo RESCUE-SSH-OK"], { stdout: "pipe", stderr: "pipe" });
      const timer = setTimeout(() => ssh.kill("SIGKILL"), 60_000);
      const [sshOut, sshErr] = await Promise.all([new Response(ssh.stdout).text(), new Response(ssh.stderr).text(), ssh.exited]);
      clearTimeout(timer);
      expect(sshOut + sshErr).toContain("RESCUE-SSH-OK");
      await Bun.sleep(500);
      vm.type("echo RESCUE-$((6*7)); poweroff -f\n");
      await vm.waitFor(/RESCUE-42\n/, 30_000);
      expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
    } finally {
      vm.kill();
    }
  }, 180_000);

  test("airroot.shell stops before switch_root: shell on the serial console, ssh on 2222 with the site's key", async () => {
    const port = await freePort("127.0.0.1");
    const vm = startVm("quiet airroot.rootimage=/images/root.sfs airroot.shell", `,hostfwd=tcp:127.0.0.1:${port}-:2222`);
    try {
      await vm.waitFor(/airroot.shell given: stopping before switch_root/, 110_000);
      await vm.waitFor(/starting a console shell on \/dev\/ttyS0; the debug sshd listens on port 2222/, 5_000);
      // The debug sshd, reached through QEMU's loopback-only port forward, runs in the initramfs root.
      const ssh = Bun.spawn(["ssh", "-p", String(port), "-i", clientKey, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20", "root@127.0.0.1", "cat /proc/mounts; echo SSH-OK"],
        { stdout: "pipe", stderr: "pipe" });
      const timer = setTimeout(() => ssh.kill("SIGKILL"), 60_000);
      const [sshOut, sshErr] = await Promise.all([new Response(ssh.stdout).text(), new Response(ssh.stderr).text(), ssh.exited]);
      clearTimeout(timer);
      expect(sshOut + sshErr).toContain("SSH-OK");
      expect(sshOut).toMatch(/^airroot \/sysroot overlay /m);
      expect(sshOut).toMatch(/^\/dev\/loop0 \/mnt\/remote squashfs ro/m);
      await Bun.sleep(500);
      vm.type("echo SHELL-$((6*7)); grep -c ' /sysroot ' /proc/mounts; poweroff -f\n");
      await vm.waitFor(/SHELL-42\n1\n/, 30_000);
      expect(await Promise.race([vm.exited, Bun.sleep(20_000).then(() => "still running")])).toBe(0);
    } finally {
      vm.kill();
    }
  }, 180_000);
});
